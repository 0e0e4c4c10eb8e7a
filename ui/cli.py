"""``itbrig kiosk``: the touchscreen kiosk, on a running service or on its own simulated bench."""

from __future__ import annotations

import argparse
import logging
import os

from rig.client.http import DEFAULT_URL, URL_ENV, RigClient, ServiceRejected, ServiceUnreachable
from rig.client.launcher import ServiceProcess
from ui.format import kiosk_rotation


def add_kiosk_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``itbrig kiosk`` on the ``itbrig`` command line."""
    kiosk = subparsers.add_parser(
        "kiosk",
        help="the touchscreen kiosk (starts its own simulated rig service without Pi hardware)",
    )
    kiosk.add_argument("--url", default=None, help=f"rig service URL (default ${URL_ENV} or local)")
    where = kiosk.add_mutually_exclusive_group()
    where.add_argument(
        "--sim",
        dest="sim",
        action="store_true",
        default=None,
        help="start a rig service on the simulated bench as a child process "
        f"(the default unless --url or ${URL_ENV} is given)",
    )
    where.add_argument(
        "--no-sim", dest="sim", action="store_false", help="connect to a running service"
    )
    kiosk.add_argument("--data-dir", default=None, help="books of the child service (default temp)")
    kiosk.add_argument("--time-scale", type=float, default=None, help="child service's time ×N")
    kiosk.add_argument("--windowed", action="store_true", help="800×480 window, not full screen")
    kiosk.set_defaults(handler=run_kiosk)


def wants_sim(args: argparse.Namespace) -> bool:
    """--sim given, or neither --sim/--no-sim nor a service URL (--url, $ITBRIG_URL).

    On a Pi the rig service runs under systemd; the kiosk unit and ``install.sh --run`` name its
    URL, so the kiosk never needs to know what hardware it runs on.
    """
    if args.sim is not None:
        return args.sim
    return args.url is None and not os.environ.get(URL_ENV)


def run_kiosk(args: argparse.Namespace) -> int:
    if not wants_sim(args):
        return _run_app(args.url or os.environ.get(URL_ENV) or DEFAULT_URL, args.windowed)
    with ServiceProcess(data_dir=args.data_dir, time_scale=args.time_scale) as service:
        print(f"rig service on the simulated bench at {service.url} (log {service.log_path})")
        return _run_app(service.url, args.windowed)


def initial_rotation(url: str, timeout_s: float = 2.0) -> int:
    """``[kiosk] rotation`` from the service, so the first frame is already turned (0 when the
    service does not answer yet; the kiosk turns as soon as a status arrives)."""
    try:
        with RigClient(url, timeout_s=timeout_s) as client:
            status = client.get("/api/status")
    except (ServiceUnreachable, ServiceRejected, ValueError):
        return 0
    rotation = kiosk_rotation(status) if isinstance(status, dict) else None
    return rotation or 0


def _run_app(url: str, windowed: bool) -> int:
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    Config.set("graphics", "width", "800")
    Config.set("graphics", "height", "480")
    Config.set("graphics", "rotation", str(initial_rotation(url)))
    Config.set("graphics", "fullscreen", "0" if windowed else "auto")
    Config.set("kivy", "exit_on_escape", "1")

    from ui.app import KioskApp

    for chatty in ("httpx", "httpcore", "websockets"):  # Kivy logs everything at DEBUG otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    KioskApp(url).run()
    return 0
