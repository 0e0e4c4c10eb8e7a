"""Benchmark: the kiosk process's start to its first frame with live status, frame time under
the live 5 Hz trend, and touch-to-update latency of a program change, against a real rig service
on the simulated bench (started first, as on a Pi, where it runs before the kiosk).

The kiosk runs in a child process of this script so that its start is a real process start
(interpreter, imports, window). Renders offscreen (SDL2 offscreen driver) unless a display is
set up; frames are not capped, so frame time is the work the kiosk does per frame, in wall time
and in the process's CPU time (wall time includes waiting for a core on a busy machine: the load
average is printed). Prints a table.

    .venv/bin/python bench/kiosk.py [--seconds 10] [--changes 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# The kiosk is driven with the tests' touch helpers (tests/kiosk_touch.py): the project root on
# the path, as when the suite runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ["KIVY_NO_ARGS"] = "1"
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kivy-home-"))
os.environ.setdefault("KIVY_WINDOW", "sdl2")
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="frame-time run (bench s)")
    parser.add_argument("--changes", type=int, default=5, help="program changes to time")
    parser.add_argument("--kiosk-of", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--started-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kiosk_of:
        try:
            kiosk(args, args.kiosk_of, args.started_at)
        except BaseException:  # Kivy takes stderr over: say what went wrong on stdout
            traceback.print_exc(file=sys.stdout)
            raise
        return

    from rig.client.http import RigClient
    from rig.client.launcher import ServiceProcess

    started = time.perf_counter()
    with ServiceProcess(time_scale=1440) as service:
        print(f"service ready (child process): {(time.perf_counter() - started) * 1000:.0f} ms")
        with RigClient(service.url) as client:  # a running program: the trend has flow to draw
            client.login("clinician", "2222")
            proposal = client.post(
                "/api/program/propose",
                {"program": {"mode": "continuous", "concentration_ug_per_ml": 500,
                             "dose_ug_per_day": 300}},
            )  # fmt: skip
            client.post("/api/program/confirm", {"proposal_id": proposal["proposal_id"]})
        command = [sys.executable, __file__, "--kiosk-of", service.url]
        command += ["--seconds", str(args.seconds), "--changes", str(args.changes)]
        command += ["--started-at", str(time.time())]
        subprocess.run(command, check=True)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def kiosk(args: argparse.Namespace, url: str, started_at: float) -> None:
    """The kiosk's part, in its own process started at *started_at* (wall clock)."""
    from kivy.config import Config

    Config.set("graphics", "width", "800")
    Config.set("graphics", "height", "480")
    Config.set("graphics", "maxfps", "0")
    Config.set("input", "mouse", "")

    from kivy.base import EventLoop
    from kivy.core.window import Window

    from tests.kiosk_touch import pump, tap, wait_for
    from ui.app import build_root
    from ui.controller import Controller

    built = time.perf_counter()
    flips: list[float] = []
    EventLoop.ensure_window()
    Window.bind(on_flip=lambda *_a: flips.append(time.perf_counter()))
    ctl = Controller(url, poll_s=1.0)
    root = build_root(ctl)
    Window.add_widget(root)
    ctl.start()
    wait_for(lambda: flips and ctl.reachable, 20, "the first status")
    drawn = len(flips)
    wait_for(lambda: len(flips) > drawn, 20, "a frame showing it")
    first_frame = flips[0]
    first_status_s = time.time() - started_at
    home = root.manager.get_screen("home")
    wait_for(lambda: home.state == "running", 20, "the running program on Home")

    plot = home.ids.trend
    samples: list[float] = []
    ctl.bind(on_sample=lambda *_a: samples.append(time.perf_counter()))
    frames: list[float] = []  # wall time of each event-loop pass that drew a frame
    frames_cpu: list[float] = []  # the process's CPU time in it (every thread)
    flips.clear()
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        drawn, t0, cpu0 = len(flips), time.perf_counter(), time.process_time()
        EventLoop.idle()
        if len(flips) > drawn:
            frames.append((time.perf_counter() - t0) * 1000)
            frames_cpu.append((time.process_time() - cpu0) * 1000)
    sample_hz = len(samples) / args.seconds

    # touch-to-update: Confirm on the Finish screen until Home shows the new dose
    ctl.worker.client.login("clinician", "2222")
    ctl.role = "clinician"
    program = root.manager.get_screen("program")
    finish = root.manager.get_screen("finish")
    review_ms: list[float] = []
    confirm_ms: list[float] = []
    for index in range(args.changes):
        dose = 310 + 10 * index
        root.show("program")
        pump(3)
        program.choose("continuous")
        program.form.values = {**program.form.values, "dose_ug_per_day": float(dose)}
        review = next(b for b in program.form.actions_box.children if b.text == "Review")
        t0 = time.perf_counter()
        tap(review, frames=0)
        wait_for(lambda: root.manager.current == "finish", 10, "the Finish screen")
        review_ms.append((time.perf_counter() - t0) * 1000)
        pump(2)
        t0 = time.perf_counter()
        tap(finish.ids.confirm, frames=0)
        shown = f"{dose:.1f} µg/day"
        wait_for(lambda s=shown: home.ids.dose.text == s, 10, "Home to show the new dose")
        confirm_ms.append((time.perf_counter() - t0) * 1000)
    ctl.stop()

    def spread(values: list[float]) -> str:
        return (
            f"{statistics.median(values):.1f} / {percentile(values, 0.99):.1f} / "
            f"{max(values):.1f} ms"
        )

    rows = [
        ("kiosk process start to first frame with live status", f"{first_status_s * 1000:.0f} ms"),
        ("  of which window and layout to first frame", f"{(first_frame - built) * 1e3:.0f} ms"),
        ("telemetry samples received", f"{sample_hz:.1f} Hz"),
        ("trend points drawn (last window)", f"{plot.samples_drawn}"),
        ("frame time p50 / p99 / max (live trend), wall", f"{spread(frames)} "
         f"({len(frames)} frames, {len(frames) / args.seconds:.0f} frames/s drawn)"),
        ("frame time p50 / p99 / max (live trend), CPU", spread(frames_cpu)),
        ("touch Review → Finish screen p50 / max",
         f"{statistics.median(review_ms):.0f} / {max(review_ms):.0f} ms"),
        ("touch Confirm → Home shows new dose p50 / max",
         f"{statistics.median(confirm_ms):.0f} / {max(confirm_ms):.0f} ms"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
