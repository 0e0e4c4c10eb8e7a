"""``itbrig serve``: build the bench, open the books, run the rig service and its API."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path

import uvicorn

from hal.bench import build_bench
from rig.common.inputs import InputError
from rig.service.api import create_app
from rig.service.auth import Authenticator
from rig.service.books import RigStore
from rig.service.config import load_config
from rig.service.loop import RigService

DEFAULT_PORT = 8470
DEFAULT_DATA_DIR = Path("data")
ACCESS_TOKEN_ENV = "ITBRIG_ACCESS_TOKEN"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

log = logging.getLogger("itbrig.serve")


def systemd_notifier():
    """A notify function when running under systemd (NOTIFY_SOCKET set), else None."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    import sdnotify

    return sdnotify.SystemdNotifier().notify


def serve(args: argparse.Namespace) -> int:
    if args.host not in LOOPBACK_HOSTS and not args.allow_remote:
        raise InputError(
            f"--host {args.host}: listening beyond loopback needs --allow-remote and an access "
            f"token (--access-token or ${ACCESS_TOKEN_ENV})"
        )
    access_token = args.access_token or os.environ.get(ACCESS_TOKEN_ENV)
    if args.allow_remote and not access_token:
        raise InputError(f"--allow-remote: an access token is required (${ACCESS_TOKEN_ENV})")
    config = load_config(args.config)
    time_compression = args.time_scale or config.therapy.time_compression
    if not 1 <= time_compression <= 100_000:
        raise InputError(f"--time-scale: {time_compression:g} is outside 1 to 100000")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    notify = systemd_notifier()
    store = RigStore.open(Path(args.data_dir) / "rig.db")
    bench = build_bench(config, args.hal)
    service = RigService(
        bench,
        store,
        time_compression=time_compression,
        notify=notify,
        max_bench_flow_ul_per_min=config.therapy.max_bench_flow_ul_per_min,
        reservoir_capacity_ml=config.therapy.reservoir_capacity_ml,
    )
    app = create_app(service, Authenticator(store), access_token=access_token)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )
    service.start()
    if notify is not None:
        threading.Thread(target=_ready_when_started, args=(server, notify), daemon=True).start()
    log.info(
        "rig service on http://%s:%d (%s bench, x%g)", args.host, args.port, bench.kind,
        time_compression,
    )  # fmt: skip
    # uvicorn stops on SIGTERM/SIGINT, then re-raises the signal to the handler it found: make
    # that a no-op so the books are closed below instead of the process dying mid-shutdown.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: None)
    try:
        server.run()
    finally:
        service.shutdown()
        bench.close()
        store.close()
        log.info("rig service stopped; books closed")
    return 0


def _ready_when_started(server: uvicorn.Server, notify) -> None:
    while not server.started and not server.should_exit:
        threading.Event().wait(0.05)
    if server.started:
        notify("READY=1")


def add_serve_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the rig service (owns the hardware)")
    parser.add_argument("--config", help="rig.toml (default: the shipped one)")
    parser.add_argument(
        "--hal", choices=("sim", "gpio"), default=None,
        help="hardware layer (default: gpio on a Raspberry Pi, sim elsewhere)",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="where the books live")
    parser.add_argument(
        "--time-scale", type=float, default=None,
        help="time compression (patient seconds per bench second; default from rig.toml)",
    )  # fmt: skip
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")
    parser.add_argument("--access-token", default=None, help=f"or ${ACCESS_TOKEN_ENV}")
    parser.set_defaults(handler=serve)
