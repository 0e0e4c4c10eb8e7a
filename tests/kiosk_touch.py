"""Driving the kiosk without a person: frames, waits and real touch events (tests, benchmark)."""

from __future__ import annotations

import time
from collections.abc import Callable

from kivy.base import EventLoop
from kivy.tests.common import UnitTestTouch
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.widget import Widget


def pump(frames: int = 2) -> None:
    """Run *frames* frames of the event loop (clock, input, drawing)."""
    for _ in range(frames):
        EventLoop.idle()


def wait_for(condition: Callable[[], object], timeout_s: float = 10.0, what: str = "") -> None:
    """Run frames until *condition* holds; AssertionError after *timeout_s*."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or condition}")
        EventLoop.idle()


def touch_at(x: float, y: float, frames: int = 2) -> None:
    """A finger down and up at window coordinates, through the event loop's input queue."""
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    pump(1)
    touch.touch_up()
    pump(frames)


def tap(widget: Widget, frames: int = 2, reaches: bool = True) -> None:
    """Press and release *widget* at its centre with a real touch event; a button must (or with
    ``reaches=False`` must not) receive it."""
    pump(1)  # let any pending layout settle before aiming
    assert widget.get_root_window() is not None, f"{widget} is not on the window"
    assert not widget.disabled, f"{widget} is disabled"
    pressed: list[bool] = []
    watching = isinstance(widget, ButtonBehavior)
    if watching:
        uid = widget.fbind("on_press", lambda *_a: pressed.append(True))
    touch_at(*widget.to_window(*widget.center), frames=frames)
    if watching:
        widget.unbind_uid("on_press", uid)
        assert bool(pressed) == reaches, f"{widget} ({getattr(widget, 'text', '')!r}): {pressed}"


def drag(widget: Widget, dy: float, steps: int = 6, frames: int = 2) -> None:
    """A finger put down on *widget*'s centre and moved *dy* pixels up (negative: down)."""
    x, y = widget.to_window(*widget.center)
    touch = UnitTestTouch(x, y)
    touch.touch_down()
    pump(1)
    for step in range(1, steps + 1):
        touch.touch_move(x, y + dy * step / steps)
        pump(1)
    touch.touch_up()
    pump(frames)


def reveal(scroll: Widget, child: Widget, limit: int = 12) -> None:
    """Swipe *scroll* until *child* lies wholly inside it (as a finger would, no jumps)."""
    for _ in range(limit):
        _x, bottom = child.to_window(child.x, child.y)
        _x, top = child.to_window(child.right, child.top)
        _x, view_bottom = scroll.to_window(scroll.x, scroll.y)
        _x, view_top = scroll.to_window(scroll.right, scroll.top)
        if bottom >= view_bottom - 1 and top <= view_top + 1:
            return
        step = min(scroll.height * 0.6, 120)
        drag(scroll, step if bottom < view_bottom else -step)
    raise AssertionError(f"{child} never came into view")
