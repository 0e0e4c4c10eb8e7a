"""Offscreen Kivy for the kiosk tests: environment set before Kivy is imported, real touches.

Kivy renders through SDL2's offscreen video driver on Mesa (llvmpipe) with no display. Every test
gets the kiosk root on the one Window of the process at 800×480; ``tap`` presses a widget with a
real MotionEvent dispatched through the event loop, and ``screenshot`` saves PNGs into
``test-artefacts/screens/``.
"""

from __future__ import annotations

import os
import tempfile
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

from tests.kiosk_touch import pump, tap, touch_at, wait_for  # noqa: E402
from ui.app import KioskRoot, build_root  # noqa: E402
from ui.controller import Controller  # noqa: E402

SCREENS_DIR = Path(__file__).resolve().parents[2] / "test-artefacts" / "screens"


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
    touch_at = staticmethod(touch_at)
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
