"""``itbrig serve``: build the bench, open the books, run the rig service and its API."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import uvicorn

from hal.bench import Bench, build_bench
from rig.common.inputs import InputError
from rig.service.alarm_manager import annunciate
from rig.service.api import create_app
from rig.service.auth import Authenticator
from rig.service.books import EventKind, RigStore, StorageError
from rig.service.config import RigConfig, load_config
from rig.service.loop import RigService
from rig.service.selftest import CheckResult, SelfTestReport, run_selftest
from rig.therapy.alarms import AlarmPriority

DEFAULT_PORT = 8470
DEFAULT_DATA_DIR = Path("data")
ACCESS_TOKEN_ENV = "ITBRIG_ACCESS_TOKEN"
ACCESS_TOKEN_FILE_ENV = "ITBRIG_ACCESS_TOKEN_FILE"
MIN_ACCESS_TOKEN_CHARS = 16
SWITCH_INTERVAL_S = 0.001
BOOKS_RETRY_S = 5.0  # the high alarm's repeat interval: one burst per attempt
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # visible ASCII: safe in an HTTP header

log = logging.getLogger("itbrig.serve")


def systemd_notifier():
    """A notify function when running under systemd (NOTIFY_SOCKET set), else None."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    import sdnotify

    return sdnotify.SystemdNotifier().notify


def read_access_token(args: argparse.Namespace) -> str | None:
    """The access token from ``--access-token-file`` (or ``$ITBRIG_ACCESS_TOKEN_FILE``) or
    ``$ITBRIG_ACCESS_TOKEN``, never from the command line (where ``ps`` shows it to everyone);
    at least :data:`MIN_ACCESS_TOKEN_CHARS` visible ASCII characters."""
    if args.access_token is not None:
        raise InputError(
            "--access-token: a token on the command line shows in `ps` and the shell history; "
            f"put it in a file (--access-token-file, mode 0600) or in ${ACCESS_TOKEN_ENV}"
        )
    path = args.access_token_file or os.environ.get(ACCESS_TOKEN_FILE_ENV)
    source = f"${ACCESS_TOKEN_ENV}"
    if path:
        source = f"--access-token-file {path}"
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
            mode = Path(path).stat().st_mode
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{source}: cannot read the token ({error})") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s is readable by others (mode %o): chmod 600 it", path, mode & 0o777)
    else:
        token = os.environ.get(ACCESS_TOKEN_ENV) or None
    if token is None:
        return None
    if not _TOKEN_CHARS.fullmatch(token):
        raise InputError(
            f"{source}: the token must be visible ASCII characters only (no spaces or accents)"
        )
    if len(token) < MIN_ACCESS_TOKEN_CHARS:
        raise InputError(
            f"{source}: the token has {len(token)} characters; at least "
            f"{MIN_ACCESS_TOKEN_CHARS} are needed (make one with: python3 -c "
            "'import secrets; print(secrets.token_urlsafe(24))')"
        )
    return token


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.host not in LOOPBACK_HOSTS and not args.allow_remote:
        raise InputError(
            f"--host {args.host}: listening beyond loopback needs --allow-remote and an access "
            f"token (--access-token-file or ${ACCESS_TOKEN_ENV})"
        )
    access_token = read_access_token(args)
    if args.allow_remote and not access_token:
        raise InputError(
            f"--allow-remote: an access token is required (--access-token-file or "
            f"${ACCESS_TOKEN_ENV})"
        )
    config = load_config(args.config)
    time_compression = args.time_scale or config.therapy.time_compression
    if not 1 <= time_compression <= 100_000:
        raise InputError(f"--time-scale: {time_compression:g} is outside 1 to 100000")
    notify = systemd_notifier()
    data_dir = Path(args.data_dir)
    bench = build_bench(config, args.hal)
    report = power_on_self_test(bench, data_dir, config, notify)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    store = open_books(bench, data_dir / "rig.db", notify, stopping=stopping)
    if store is None:
        bench.close()
        log.info("rig service stopped before the books could be opened")
        return 0
    service = RigService(
        bench,
        store,
        time_compression=time_compression,
        notify=notify,
        kiosk=config.kiosk,
        max_bench_flow_ul_per_min=config.therapy.max_bench_flow_ul_per_min,
        reservoir_capacity_ml=config.therapy.reservoir_capacity_ml,
    )
    service.apply_self_test(report)
    app = create_app(service, Authenticator(store), access_token=access_token)
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    )
    service.start()
    # What exists now lives as long as the service: out of the garbage collector's way, so that
    # a collection (run by whichever thread allocates) stays short for the delivery loop.
    gc.collect()
    gc.freeze()
    # A thread that wants the interpreter waits at most this long for a busy one to let go
    # (Python's default is 5 ms): the step and delivery threads against request handling.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
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


def open_books(
    bench: Bench,
    path: Path,
    notify,
    *,
    stopping: threading.Event,
    retry_s: float = BOOKS_RETRY_S,
) -> RigStore | None:
    """The books, opened; while they cannot be (disk full, read-only, not mounted, corrupt), the
    high storage-failure alarm sounds and shows on the bench (no books needed for that), systemd
    is told why, and opening is retried every *retry_s*. None if asked to stop meanwhile."""
    failed_since_s: float | None = None
    while True:
        try:
            store = RigStore.open(path)
        except (StorageError, OSError) as error:
            if failed_since_s is None:
                failed_since_s = time.monotonic()
                log.error("cannot open the books %s: %s; retrying every %g s", path, error, retry_s)
            annunciate(bench.buzzer, bench.led, AlarmPriority.HIGH)
            if notify is not None:
                notify(f"STATUS=storage failure: cannot open the books ({error})")
                notify(f"EXTEND_TIMEOUT_USEC={int(3 * retry_s * 1e6)}")
            if stopping.wait(retry_s):
                return None
            continue
        if failed_since_s is not None:
            waited_s = time.monotonic() - failed_since_s
            bench.buzzer.silence()
            log.warning("books opened after %.1f s", waited_s)
            store.add_event(
                EventKind.STORAGE,
                f"storage failure at start: the books could not be opened for {waited_s:.1f} "
                "bench s; the service started once they could",
                detail={"waited_s": round(waited_s, 1)},
            )
        return store


def power_on_self_test(bench: Bench, data_dir: Path, config: RigConfig, notify) -> SelfTestReport:
    """Run the self-test before the delivery loop starts, logging every check.

    Under systemd the watchdog is pinged after each check: a slow instrument timing out must
    not get the service killed before it has said what is wrong.
    """

    def report_check(check: CheckResult) -> None:
        log.log(
            logging.INFO if check.passed else logging.ERROR,
            "self-test %s %s: %s", "ok" if check.passed else "FAILED", check.name, check.detail,
        )  # fmt: skip
        if notify is not None:
            notify("WATCHDOG=1")

    report = run_selftest(bench, data_dir, config.selftest, after_each=report_check)
    if report.passed:
        log.info("self-test passed")
    else:
        log.error("%s; delivery is blocked", report.failure_message())
    return report


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
    parser.add_argument(
        "--access-token-file", default=None, metavar="FILE",
        help=f"file holding the access token (or ${ACCESS_TOKEN_FILE_ENV}, or the token itself "
        f"in ${ACCESS_TOKEN_ENV}); at least {MIN_ACCESS_TOKEN_CHARS} characters",
    )  # fmt: skip
    # Refused with a message: a token on the command line shows in `ps`.
    parser.add_argument("--access-token", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(handler=serve)
