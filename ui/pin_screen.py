"""The PIN screen: the role logged in changes its own PIN (current PIN, new PIN twice)."""

from __future__ import annotations

from typing import Any

from kivy.properties import StringProperty

from ui.screens import KioskScreen

STEPS = {
    "old": "Type your current PIN",
    "new": "Type the new PIN (4 to 8 digits, not a factory PIN)",
    "repeat": "Type the new PIN again",
}


class PinScreen(KioskScreen):
    """Change the logged-in role's PIN with ``PUT /api/pins/{role}``; the PIN pad is masked."""

    step = StringProperty("old")
    prompt = StringProperty(STEPS["old"])

    def on_pre_enter(self, *_args: Any) -> None:
        self.restart()

    def restart(self) -> None:
        self._pins: dict[str, str] = {}
        self.step = "old"
        self.ids.pinpad.pin = ""
        self.say("")

    def on_step(self, _instance: Any, step: str) -> None:
        self.prompt = STEPS[step]

    def next_step(self) -> None:
        """Take the PIN typed for this step; after the repeat, ask the service to change it."""
        role = self.ctl.role if self.ctl is not None else ""
        if not role:
            self.fail("Log in first: each role changes its own PIN")
            return
        pad = self.ids.pinpad
        if not pad.pin:
            self.fail("Type the PIN")
            return
        self._pins[self.step] = pad.pin
        pad.pin = ""
        if self.step == "old":
            self.step = "new"
        elif self.step == "new":
            self.step = "repeat"
        elif self._pins["repeat"] != self._pins["new"]:
            self.step = "new"
            self.fail("The two new PINs differ: type the new PIN again")
        else:
            body = {"new_pin": self._pins["new"], "old_pin": self._pins["old"]}
            self.request("PUT", f"/api/pins/{role}", body, lambda _r: self._changed(role))
            self.step = "old"
            return
        self.say("")

    def _changed(self, role: str) -> None:
        self.restart()
        self.say(f"PIN of the {role} role changed")
