"""The kiosk application: the root layout (notice, alarm banner, screens, navigation) and App."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.factory import Factory
from kivy.lang import Builder
from kivy.properties import ObjectProperty, StringProperty
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.screenmanager import NoTransition, ScreenManager

from ui import format as fmt
from ui.controller import Controller
from ui.nav import SCREENS, nav_for
from ui.widgets import render_labels_into_new_textures

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
    "pin.kv",
    "training.kv",
    "calibration.kv",
)
_loaded = False


def load_kv() -> None:
    """Load the layout rules once per process."""
    global _loaded
    if _loaded:
        return
    render_labels_into_new_textures()
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
        # ids hold weak references: the overlay, off the tree while the service answers, would
        # be garbage-collected and gone when it is needed again.
        self.overlay = self.ids.overlay.__self__
        manager: ScreenManager = self.ids.screens
        manager.transition = NoTransition()
        for entry in SCREENS:
            screen = entry.screen(name=entry.name)
            screen.attach(ctl)
            manager.add_widget(screen)
        ctl.bind(status=self._status, role=self._header, reachable=self._reachable)
        ctl.bind(role=self._nav)
        self._nav()
        self.ids.banner.bind(on_release=lambda _b: self.show("alarms"))
        self._reachable(ctl, ctl.reachable)
        self._header()

    @property
    def manager(self) -> ScreenManager:
        return self.ids.screens

    def show(self, name: str) -> None:
        self.manager.current = name

    def _nav(self, *_args: Any) -> None:
        """The navigation bar of the role logged in (``ui.nav``); leave a screen it may not see."""
        nav = self.ids.nav
        nav.clear_widgets()
        entries = nav_for(self.ctl.role)
        longest_label = max(len(entry.label) for entry in entries)
        for entry in entries:
            button = Factory.NavButton(text=entry.label)
            button.screen_name = entry.name
            button.longest_label = longest_label
            button.bind(on_release=lambda b: self.show(b.screen_name))
            nav.add_widget(button)
        if self.manager.current not in {entry.name for entry in entries} | {"finish"}:
            self.show("home")

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
        overlay = self.overlay
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
        return self.overlay.parent is self


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
