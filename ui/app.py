"""The kiosk application: the root layout (notice, alarm banner, screens, navigation) and App."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import ObjectProperty, StringProperty
from kivy.uix.button import Button
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.screenmanager import NoTransition, ScreenManager

from ui import format as fmt
from ui.calibration_screens import CALIBRATION_SCREENS
from ui.controller import Controller
from ui.screens import SCREENS

KV_DIR = Path(__file__).parent / "kv"
KV_FILES = (
    "widgets.kv",
    "root.kv",
    "home.kv",
    "program.kv",
    "bolus.kv",
    "refill.kv",
    "alarms.kv",
    "history.kv",
    "login.kv",
    "settings.kv",
    "faults.kv",
    "calibration.kv",
)
_loaded = False


def load_kv() -> None:
    """Load the layout rules once per process."""
    global _loaded
    if _loaded:
        return
    for name in KV_FILES:
        Builder.load_file(str(KV_DIR / name))
    _loaded = True


class KioskRoot(FloatLayout):
    """Notice bar, alarm banner, the screen manager and the navigation bar; the unreachable overlay
    covers all of it while the service does not answer."""

    ctl: Controller = ObjectProperty(None)
    header = StringProperty(fmt.TRAINING_NOTICE)
    notice = StringProperty(fmt.TRAINING_NOTICE)

    def __init__(self, ctl: Controller, **kwargs: Any) -> None:
        super().__init__(ctl=ctl, **kwargs)
        manager: ScreenManager = self.ids.screens
        manager.transition = NoTransition()
        for name, cls, label in (*SCREENS, *CALIBRATION_SCREENS):
            screen = cls(name=name)
            screen.attach(ctl)
            manager.add_widget(screen)
            if label:
                button = Button(text=label)
                button.screen_name = name
                button.bind(on_release=lambda b: self.show(b.screen_name))
                self.ids.nav.add_widget(button)
        ctl.bind(status=self._status, role=self._header, reachable=self._reachable)
        self.ids.banner.bind(on_release=lambda _b: self.show("alarms"))
        self._reachable(ctl, ctl.reachable)
        self._header()

    @property
    def manager(self) -> ScreenManager:
        return self.ids.screens

    def show(self, name: str) -> None:
        self.manager.current = name

    def _status(self, _ctl: Any, status: dict[str, Any]) -> None:
        self.ids.banner.alarms = list(status.get("alarms") or [])
        self._header()
        self._rotate(status)

    def _rotate(self, status: dict[str, Any]) -> None:
        """Turn picture and touch as ``[kiosk] rotation`` says (Kivy rotates both together)."""
        rotation = fmt.kiosk_rotation(status)
        window = self.get_root_window()
        if rotation is not None and window is not None and window.rotation != rotation:
            window.rotation = rotation

    def _header(self, *_args: Any) -> None:
        status = self.ctl.status or {}
        role = self.ctl.role or "not logged in"
        factor = status.get("time_compression")
        self.header = (
            f"time ×{factor:g}   patient {fmt.when(status.get('patient_time'))}   {role}"
            if isinstance(factor, int | float)
            else role
        )

    def _reachable(self, _ctl: Any, reachable: bool) -> None:
        overlay = self.ids.overlay
        overlay.text = (
            "SERVICE UNREACHABLE\n\nThe rig service does not answer at\n"
            f"{self.ctl.url}\n\nRetrying every second…"
            if self.ctl.ever_reached
            else f"Connecting to the rig service at\n{self.ctl.url} …"
        )
        if reachable and overlay.parent is self:
            self.remove_widget(overlay)
        elif not reachable and overlay.parent is None:
            self.add_widget(overlay)

    @property
    def unreachable_shown(self) -> bool:
        """True while the full-screen unreachable state covers the kiosk."""
        return self.ids.overlay.parent is self


def build_root(ctl: Controller) -> KioskRoot:
    """The whole kiosk layout over a controller (used by the App and by tests)."""
    load_kv()
    return KioskRoot(ctl)


class KioskApp(App):
    """``itbrig kiosk``: the touchscreen clinician programmer."""

    title = f"ITB rig kiosk — {fmt.TRAINING_NOTICE}"

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.ctl: Controller | None = None

    def build(self) -> KioskRoot:
        self.ctl = Controller(self.url)
        return build_root(self.ctl)

    def on_start(self) -> None:
        self.ctl.start()

    def on_stop(self) -> None:
        self.ctl.stop()
