"""Offscreen Kivy for the kiosk tests: environment set before Kivy is imported, real touches.

Kivy renders through SDL2's offscreen video driver on Mesa (llvmpipe) with no display. Every test
gets the kiosk root on the one Window of the process at 800×480; ``tap`` presses a widget with a
real MotionEvent dispatched through the event loop, and ``screenshot`` saves PNGs into
``test-artefacts/screens/``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ["KIVY_NO_ARGS"] = "1"
os.environ["KIVY_NO_CONSOLELOG"] = "1"
os.environ["KIVY_NO_FILELOG"] = "1"
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kivy-home-"))
os.environ.setdefault("KIVY_WINDOW", "sdl2")
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("KIVY_METRICS_DENSITY", "1")

import pytest
from kivy.config import Config

Config.set("graphics", "width", "800")
Config.set("graphics", "height", "480")
Config.set("input", "mouse", "")  # no desktop mouse provider: touches come from the tests

from kivy.base import EventLoop  # noqa: E402
from kivy.core.window import Window  # noqa: E402
from kivy.tests.common import UnitTestTouch  # noqa: E402
from kivy.uix.behaviors import ButtonBehavior  # noqa: E402
from kivy.uix.widget import Widget  # noqa: E402

from ui.app import KioskRoot, build_root  # noqa: E402
from ui.controller import Controller  # noqa: E402

SCREENS_DIR = Path(__file__).resolve().parents[2] / "test-artefacts" / "screens"


def pump(frames: int = 2) -> None:
    """Run *frames* frames of the event loop (clock, input, drawing)."""
    for _ in range(frames):
        EventLoop.idle()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    """Run frames until *condition* holds; fail after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or condition}")
        EventLoop.idle()


def tap(widget: Widget, frames: int = 2, reaches: bool = True) -> None:
    """Press and release *widget* at its centre with a real touch event; a button must (or with
    ``reaches=False`` must not) receive it."""
    pump(1)  # let any pending layout settle before aiming
    assert widget.get_root_window() is not None, f"{widget} is not on the window"
    assert not widget.disabled, f"{widget} is disabled"
    x, y = widget.to_window(*widget.center)
    pressed: list[bool] = []
    watching = isinstance(widget, ButtonBehavior)
    if watching:
        uid = widget.fbind("on_press", lambda *_a: pressed.append(True))
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    pump(1)
    touch.touch_up()
    pump(frames)
    if watching:
        widget.unbind_uid("on_press", uid)
        assert bool(pressed) == reaches, f"{widget} ({getattr(widget, 'text', '')!r}): {pressed}"


def screenshot(name: str) -> Path:
    """Save the window as ``test-artefacts/screens/<name>.png``."""
    SCREENS_DIR.mkdir(parents=True, exist_ok=True)
    pump(2)
    path = SCREENS_DIR / f"{name}.png"
    Window.screenshot(str(path))
    # Window.screenshot numbers its files (name0001.png); keep the plain name.
    numbered = sorted(SCREENS_DIR.glob(f"{name}[0-9][0-9][0-9][0-9].png"))
    if numbered:
        numbered[-1].replace(path)
    return path


class Driver:
    """The helpers above, handed to tests as the ``drive`` fixture."""

    pump = staticmethod(pump)
    wait_for = staticmethod(wait_for)
    tap = staticmethod(tap)
    screenshot = staticmethod(screenshot)


@pytest.fixture
def drive() -> Driver:
    return Driver()


@pytest.fixture(scope="session")
def window() -> Window:
    EventLoop.ensure_window()
    Window.size = (800, 480)
    pump(2)
    return Window


@pytest.fixture
def window_size(window: Window) -> Iterator[Callable[[int, int], None]]:
    """Resize the window for a test; back to 800×480 afterwards."""

    def resize(width: int, height: int) -> None:
        window.size = (width, height)
        pump(3)

    yield resize
    window.size = (800, 480)
    pump(2)


def mount(ctl: Controller, window: Window) -> KioskRoot:
    root = build_root(ctl)
    window.add_widget(root)
    root.size = window.size
    pump(3)
    return root


@pytest.fixture
def offline_kiosk(window: Window) -> Iterator[KioskRoot]:
    """The kiosk pointed at a loopback port where nothing listens (the controller not started)."""
    ctl = Controller("http://127.0.0.1:9", poll_s=0.5)
    root = mount(ctl, window)
    yield root
    window.remove_widget(root)
    ctl.stop()
    pump(1)
