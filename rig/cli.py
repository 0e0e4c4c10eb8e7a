"""``itbrig``: the rig's command line.

Exit codes: 0 success, 1 runtime failure, 2 rejected input (message on stderr names what was wrong).
Each subcommand is registered by a ``_add_*`` function that sets ``handler`` on its parser.
Packages outside ``rig`` (the kiosk) add theirs through the ``itbrig.commands`` entry-point group,
so that ``rig`` never imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.metadata import entry_points

from rig.common.inputs import InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]
PLUGIN_GROUP = "itbrig.commands"


def _config_check(args: argparse.Namespace) -> int:
    from rig.service.config import load_config

    config = load_config(args.file)
    print(
        f"{args.file}: OK ({config.ul_per_microstep * 1000:.3f} nL per microstep, "
        f"stroke {config.stroke_microsteps} microsteps, "
        f"time compression x{config.therapy.time_compression:g})"
    )
    return EXIT_OK


def _config_udev_rules(args: argparse.Namespace) -> int:
    from hal.udev import udev_rules
    from rig.service.config import load_config

    print(udev_rules(load_config(args.file)), end="")
    return EXIT_OK


def _config_buses(args: argparse.Namespace) -> int:
    from rig.service.config import load_config

    for bus in load_config(args.file).buses():
        print(bus)
    return EXIT_OK


def _add_config(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="configuration file tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a rig.toml; exit 0 if valid, 2 if not")
    check.add_argument("file", help="path to the TOML configuration file")
    check.set_defaults(handler=_config_check)
    rules = config_sub.add_parser(
        "udev-rules",
        help="print the udev rules that give the rig.toml's USB-serial devices their stable names",
    )
    rules.add_argument("file", help="path to the TOML configuration file")
    rules.set_defaults(handler=_config_udev_rules)
    buses = config_sub.add_parser(
        "buses", help="print the Pi buses the rig.toml needs enabled, one a line (i2c, uart)"
    )
    buses.add_argument("file", help="path to the TOML configuration file")
    buses.set_defaults(handler=_config_buses)


def _simulate(args: argparse.Namespace) -> int:
    import json

    from rig.therapy.drugs import load_program
    from rig.therapy.patient import load_patient
    from rig.therapy.simulate import format_result, load_bolus_requests, parse_settings, simulate

    names = ("days", "capacity_ml", "reservoir_ml", "low_threshold_ml")
    names += ("battery_age_days", "eri_age_days")
    options = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.start is not None:
        try:
            options["start"] = datetime.fromisoformat(args.start)
        except ValueError:
            raise InputError(
                f"--start: {args.start!r} is not a date and time (YYYY-MM-DDTHH:MM)"
            ) from None
    settings = parse_settings(options)
    program = load_program(args.program)
    requests = load_bolus_requests(args.bolus_requests) if args.bolus_requests else None
    patient = None if args.patient is None else load_patient(args.patient or None)
    result = simulate(program, settings, requests, patient=patient)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    else:
        print(format_result(result, args.program))
    return EXIT_OK


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    simulate = subparsers.add_parser(
        "simulate",
        help="fast-forward a program file over patient days (event-driven)",
        description="Fast-forward a dose program from a freshly filled pump. Exit 2 on bad input.",
    )
    simulate.add_argument("program", help="program file (TOML); see Dose programs in the README")
    simulate.add_argument("--days", type=float, required=True, help="patient days to simulate")
    simulate.add_argument(
        "--bolus-requests", metavar="FILE", help="patient bolus requests (TOML: daily, at_h)"
    )
    simulate.add_argument("--json", action="store_true", help="print one JSON object")
    simulate.add_argument(
        "--patient", nargs="?", const="", metavar="FILE",
        help="follow a patient (TOML; without FILE the shipped adult) at least hourly",
    )  # fmt: skip
    simulate.add_argument("--reservoir-ml", type=float, help="initial volume (default: full)")
    simulate.add_argument("--capacity-ml", type=float, help="reservoir size, 20 or 40 (default 20)")
    simulate.add_argument("--low-threshold-ml", type=float, help="low-reservoir alarm (default 2)")
    simulate.add_argument("--start", help="patient start time, ISO (default 2025-01-06T00:00)")
    simulate.add_argument("--battery-age-days", type=float, help="battery age at the start")
    simulate.add_argument("--eri-age-days", type=float, help="battery age of the ERI alarm")
    simulate.set_defaults(handler=_simulate)


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    from rig.service.server import add_serve_command

    add_serve_command(subparsers)


def _add_selftest(subparsers: argparse._SubParsersAction) -> None:
    from rig.service.selftest import add_selftest_command

    add_selftest_command(subparsers)


def _add_clients(subparsers: argparse._SubParsersAction) -> None:
    from rig.client.commands import add_client_commands

    add_client_commands(subparsers)


def _add_scenario(subparsers: argparse._SubParsersAction) -> None:
    from rig.scenario_cli import add_scenario_commands

    add_scenario_commands(subparsers)


def _add_plugins(subparsers: argparse._SubParsersAction) -> None:
    """Subcommands registered by other packages (``[project.entry-points."itbrig.commands"]``)."""
    for entry_point in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        entry_point.load()(subparsers)


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_config,
    _add_simulate,
    _add_serve,
    _add_selftest,
    _add_clients,
    _add_scenario,
    _add_plugins,
]


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
