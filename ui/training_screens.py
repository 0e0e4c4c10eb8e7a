"""Training screens: the trainer panel (choose, start and watch a scenario, set clinical faults,
end it and show the debrief) and the patient monitor (what a nurse at the bedside would see)."""

from __future__ import annotations

from typing import Any

from kivy.factory import Factory
from kivy.properties import BooleanProperty, DictProperty, ListProperty, StringProperty

from ui.screens import ERROR_RGBA, KioskScreen

TRAINER_FAULTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("catheter_occlusion", "Kink", {"fraction": 1.0}),
    ("catheter_disconnection", "Disconnect", {}),
    ("over_infusion", "Runaway ×5", {"factor": 5.0}),
    ("access_port_injection", "Port 1 mL", {"volume_ml": 1.0, "concentration_ug_per_ml": 500}),
    ("mri_stall", "MRI stall 6 h", {"recovery_h": 6.0}),
    ("low_battery_reset", "Battery reset", {"dose_ug_per_day": 10.0}),
)
"""The clinical faults the trainer panel offers as buttons: code, label, parameters."""

CONSCIOUSNESS_WORDS = {
    "alert": "Alert",
    "confused": "Confused",
    "voice": "Responds to voice",
    "pain": "Responds to pain only",
    "unresponsive": "Unresponsive",
}


def signs_text(signs: list[str]) -> str:
    return ", ".join(sign.replace("_", " ") for sign in signs) or "none"


def vitals_texts(patient: dict[str, Any]) -> dict[str, str]:
    """The bedside monitor's numbers and words (no model internals)."""
    vitals = patient.get("vitals") or {}

    def value(key: str, digits: int) -> str:
        number = vitals.get(key)
        return "—" if not isinstance(number, int | float) else f"{number:.{digits}f}"

    return {
        "heart_rate": value("heart_rate_per_min", 0),
        "breathing_rate": value("breathing_rate_per_min", 0),
        "temperature": value("temperature_c", 1),
        "consciousness": CONSCIOUSNESS_WORDS.get(str(vitals.get("consciousness")), "—"),
        "mas": str(patient.get("mas") or "—"),
        "signs": signs_text(list(patient.get("signs") or [])),
    }


def debrief_text(report: dict[str, Any]) -> str:
    """Score, mastery and the missed items, for the panel after the end."""
    lines = [
        f"Score {report['points']}/{report['max_points']} ({report['score']:.0%}) — "
        + ("MASTERY" if report["mastery"] else "no mastery")
    ]
    for item in report["items"]:
        if item["done"] or not item["triggered"]:
            continue
        state = "missed" if item["scored"] else "open"  # open: its deadline had not come
        critical = " [critical]" if item["critical"] else ""
        lines.append(f"{state}: {item['description']}{critical}")
    return "\n".join(lines[:6])


class TrainerScreen(KioskScreen):
    """Choose and start a scenario, watch the patient, set faults, end it and debrief."""

    scenarios = ListProperty([])
    selected = StringProperty("")
    guided = BooleanProperty(False)
    run = DictProperty({})
    texts = DictProperty(vitals_texts({}))
    headline = StringProperty("No scenario running")
    debrief = StringProperty("")

    def on_pre_enter(self, *_args: Any) -> None:
        self.load_catalogue()
        self.poll()

    def load_catalogue(self) -> None:
        self.request("GET", "/api/training", None, self._catalogue)

    def _catalogue(self, catalogue: dict[str, Any]) -> None:
        self.scenarios = list(catalogue.get("scenarios") or [])
        box = self.ids.get("choices")
        if box is None:
            return
        box.clear_widgets()
        for row in self.scenarios:
            button = Factory.ScenarioChoice(text=row["title"])
            button.scenario_name = row["name"]
            button.bind(on_release=lambda b: self.choose(b.scenario_name))
            box.add_widget(button)

    def choose(self, name: str) -> None:
        self.selected = name

    def update(self, _status: dict[str, Any]) -> None:
        if self.manager is not None and self.manager.current == self.name:
            self.poll()

    def poll(self) -> None:
        if self.ctl is None:
            return
        self.ctl.call(
            "GET",
            "/api/training/scenario",
            None,
            self._show,
            lambda _e: None,
            params={"trainer": True},
        )

    def _show(self, run: dict[str, Any]) -> None:
        self.run = run
        patient = run.get("patient") or {}
        self.texts = vitals_texts(patient)
        state = (
            "ended"
            if run.get("finished")
            else f"{run.get('at_h', 0):.1f} of {run['duration_h']:g} h"
        )
        self.headline = f"{run['title']} ({run['mode']}) — {state}"
        plot = self.ids.get("effect")
        if plot is not None:
            plot.window_s = max(1.0, float(run["duration_h"]))
            plot.clear()
            for entry in run.get("timeline") or []:
                plot.add_sample(float(entry["at_h"]), 1.0, float(entry["effect"]))

    def start(self) -> None:
        if not self.selected:
            self.fail("Choose a scenario first")
            return
        body = {"name": self.selected, "mode": "guided" if self.guided else "assessment"}
        self.debrief = ""
        self.request("POST", "/api/training/scenario", body, self._started)

    def _started(self, run: dict[str, Any]) -> None:
        self.say(f"Started {run['title']}")
        self.poll()

    def set_fault(self, code: str) -> None:
        params = next(p for c, _label, p in TRAINER_FAULTS if c == code)
        body = {"fault": code, "params": params}
        self.request("POST", "/api/training/faults", body, lambda _r: self.say(f"Set {code}"))

    def stop(self) -> None:
        self.request("POST", "/api/training/scenario/stop", None, self._ended)

    def _ended(self, report: dict[str, Any]) -> None:
        self.debrief = debrief_text(report)
        self.say("Scenario ended", ERROR_RGBA if not report["mastery"] else (0.3, 1.0, 0.4, 1))
        self.poll()


class PatientMonitorScreen(KioskScreen):
    """The bedside view: vital signs, consciousness, tone and what the patient shows."""

    texts = DictProperty(vitals_texts({}))
    messages = StringProperty("")

    def update(self, _status: dict[str, Any]) -> None:
        if self.ctl is not None and self.manager is not None and self.manager.current == self.name:
            self.ctl.call("GET", "/api/training/scenario", None, self._show, lambda _e: None)

    def on_pre_enter(self, *_args: Any) -> None:
        self.update({})

    def _show(self, run: dict[str, Any]) -> None:
        self.texts = vitals_texts(run.get("patient") or {})
        said = []
        for note in run.get("messages") or []:
            said += [note["message"]] if note.get("message") else []
            said += [f"Hint: {note['hint']}"] if note.get("hint") else []  # guided mode only
        self.messages = "\n".join(said[-3:])
