"""``itbrig kiosk --screenshot DIR [--size WxH]``: every screen saved as a PNG, offscreen, at one
window size per process (Kivy's window cannot be rebuilt at another size in the same process),
and every label whose text does not fit its box listed.

Writes ``DIR/<screen>-<W>x<H>.png`` for each screen of the clinician's navigation and the Finish
screen (the wizard's Review is pressed: a proposal changes nothing), and
``DIR/overflow-<W>x<H>.json``: the labels whose texture is larger than the label.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

OVERFLOW_SLACK_PX = 1
LOGIN_ROLE = "clinician"
FACTORY_CLINICIAN_PIN = "2222"
PIN_ENV = "ITBRIG_PIN"
TELEMETRY_HZ = 5


def parse_size(text: str) -> tuple[int, int]:
    """``800x480`` as (800, 480); ValueError naming what is allowed."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()) or min(int(width), int(height)) < 100:
        raise ValueError(f"--size: {text!r} is not WIDTHxHEIGHT in pixels (e.g. 800x480)")
    return int(width), int(height)


def overflowing_labels(root: Any) -> list[dict[str, Any]]:
    """Labels on screen whose rendered text is larger than their box."""
    from kivy.uix.label import Label

    found = []
    for widget in root.walk(restrict=True):
        if not isinstance(widget, Label) or not widget.text or widget.get_root_window() is None:
            continue
        if widget.opacity == 0 or widget.width <= 1 or widget.height <= 1:
            continue
        text_w, text_h = widget.texture_size
        if text_w > widget.width + OVERFLOW_SLACK_PX or text_h > widget.height + OVERFLOW_SLACK_PX:
            found.append(
                {
                    "text": widget.text[:60],
                    "texture": [round(text_w), round(text_h)],
                    "box": [round(widget.width), round(widget.height)],
                }
            )
    return found


def save_png(path: Path) -> None:
    """The window as *path* (Kivy numbers screenshot files: keep the plain name)."""
    from kivy.core.window import Window

    saved = Window.screenshot(name=str(path))  # Kivy inserts a number before the suffix
    if saved:
        Path(saved).replace(path)


def run_tour(url: str, out_dir: Path, size: tuple[int, int], trend_s: float = 2.0) -> int:
    """Save every screen at *size* after *trend_s* bench seconds of live trend; 0 when every
    label fits, 1 when some do not."""
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    from kivy.config import Config

    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    Config.set("graphics", "fullscreen", "0")
    Config.set("input", "mouse", "")

    from kivy.base import EventLoop
    from kivy.core.window import Window

    from ui.app import build_root
    from ui.controller import Controller
    from ui.nav import nav_for

    def pump(frames: int) -> None:
        for _ in range(frames):
            EventLoop.idle()

    def wait_for(condition: Any, timeout_frames: int = 600) -> None:
        for _ in range(timeout_frames):
            if condition():
                return
            EventLoop.idle()

    EventLoop.ensure_window()
    Window.size = size
    ctl = Controller(url, poll_s=0.5)
    root = build_root(ctl)
    Window.add_widget(root)
    root.size = Window.size
    ctl.start()
    wait_for(lambda: ctl.reachable)
    ctl.login(
        LOGIN_ROLE,
        os.environ.get(PIN_ENV, FACTORY_CLINICIAN_PIN),
        lambda _token: None,
        lambda error: print(f"login as {LOGIN_ROLE}: {error}"),
    )
    wait_for(lambda: ctl.role == LOGIN_ROLE)
    samples_wanted = max(1, round(trend_s * TELEMETRY_HZ))
    trend = root.manager.get_screen("home").ids.trend
    wait_for(lambda: trend.samples_drawn >= samples_wanted, 300 + 400 * round(trend_s))
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{size[0]}x{size[1]}"
    overflows: dict[str, list[dict[str, Any]]] = {}

    def capture(name: str) -> None:
        pump(6)
        overflows[name] = overflowing_labels(root)
        save_png(out_dir / f"{name}-{tag}.png")

    program = root.manager.get_screen("program")
    for entry in nav_for(LOGIN_ROLE):
        root.show(entry.name)
        capture(entry.name)
        if entry.name == "program":
            program.review()
            wait_for(lambda: root.manager.current == "finish" or program.message)
            capture("finish")
    ctl.stop()
    found = {name: labels for name, labels in overflows.items() if labels}
    (out_dir / f"overflow-{tag}.json").write_text(json.dumps(found, indent=2) + "\n")
    for name, labels in found.items():
        for label in labels:
            print(f"{tag} {name}: {label['text']!r} needs {label['texture']} in {label['box']}")
    print(f"{len(overflows)} screens at {tag} saved to {out_dir}")
    return 1 if found else 0
