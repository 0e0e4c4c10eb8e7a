"""``itbrig kiosk``: the touchscreen kiosk, on a running service or on its own simulated bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

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
    kiosk.add_argument(
        "--screenshot", metavar="DIR", default=None, help="save every screen offscreen, then exit"
    )
    kiosk.add_argument("--size", default="800x480", help="window size of --screenshot (WxH)")
    kiosk.add_argument(
        "--trend-s", type=float, default=2.0, help="--screenshot: seconds of live trend first"
    )
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
    if args.screenshot is None:
        missing = no_display()
        if missing:
            print(missing, file=sys.stderr)
            return 1
    if not wants_sim(args):
        return _show(args, args.url or os.environ.get(URL_ENV) or DEFAULT_URL)
    with ServiceProcess(data_dir=args.data_dir, time_scale=args.time_scale) as service:
        print(f"rig service on the simulated bench at {service.url} (log {service.log_path})")
        return _show(args, service.url)


def _show(args: argparse.Namespace, url: str) -> int:
    if args.screenshot is None:
        return _run_app(url, args.windowed)
    from ui.tour import parse_size, run_tour

    try:
        size = parse_size(args.size)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    return run_tour(url, Path(args.screenshot), size, args.trend_s)


DRI_DIR = Path("/dev/dri")


def no_display(environ: Mapping[str, str] | None = None, dri: Path | None = None) -> str:
    """What to do when there is nowhere to show the kiosk (empty when there is a display).

    A display is an X11 or Wayland session, a video driver chosen for SDL (the kiosk unit sets
    ``kmsdrm``), or a DRM device this user may open (a Pi's console)."""
    environ = os.environ if environ is None else environ
    dri = DRI_DIR if dri is None else dri
    if environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY") or environ.get("SDL_VIDEODRIVER"):
        return ""
    cards = sorted(dri.glob("card*")) if dri.is_dir() else []
    if any(os.access(card, os.R_OK | os.W_OK) for card in cards):
        return ""
    return (
        "itbrig kiosk: no display here (no DISPLAY or WAYLAND_DISPLAY, no SDL_VIDEODRIVER, and no "
        "/dev/dri/card* this user may open), so there is nowhere to show the kiosk.\n"
        "  - run it where there is a screen: a desktop session, or a Pi's console (itbrig-kiosk."
        "service draws with SDL_VIDEODRIVER=kmsdrm);\n"
        "  - or save every screen as a picture: itbrig kiosk --screenshot DIR [--size 800x480];\n"
        "  - the rig service itself needs no display: itbrig serve --hal sim, then itbrig status."
    )


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
