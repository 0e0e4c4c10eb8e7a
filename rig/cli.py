"""``itbrig``: the rig's command line.

Exit codes: 0 success, 1 runtime failure, 2 rejected input (message on stderr names what was wrong).
Each subcommand is registered by a ``_add_*`` function that sets ``handler`` on its parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rig.errors import InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]


def _config_check(args: argparse.Namespace) -> int:
    from rig.config import load_config

    config = load_config(args.file)
    print(
        f"{args.file}: OK ({config.ul_per_microstep * 1000:.3f} nL per microstep, "
        f"stroke {config.stroke_microsteps} microsteps, "
        f"time compression x{config.therapy.time_compression:g})"
    )
    return EXIT_OK


def _add_config(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="configuration file tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a rig.toml; exit 0 if valid, 2 if not")
    check.add_argument("file", help="path to the TOML configuration file")
    check.set_defaults(handler=_config_check)


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_config]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="itbrig",
        description="ITB pump training rig (training device, not for clinical use)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
