"""One screen per task; each binds to the controller and asks it for every API call."""

from __future__ import annotations

from typing import Any

from kivy.properties import (
    BooleanProperty,
    DictProperty,
    ListProperty,
    NumericProperty,
    ObjectProperty,
    StringProperty,
)
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.label import Label
from kivy.uix.screenmanager import NoTransition, Screen

from ui import format as fmt
from ui.controller import Controller
from ui.forms import (
    AIR_BUBBLE_UL,
    BOLUS_FIELDS,
    FAULT_FRACTIONS,
    FAULT_SWITCHES,
    FILL_FIELDS,
    PROGRAM_FIELDS,
    WITHDRAWN_FIELDS,
    bolus_program,
    initial_values,
    missing,
    program_payload,
)
from ui.widgets import ConfirmPopup, KeypadForm, PriorityChip

OK_RGBA = (0.3, 1.0, 0.4, 1)
ERROR_RGBA = (1.0, 0.35, 0.3, 1)
WARN_RGBA = (1.0, 0.84, 0.0, 1)


class KioskScreen(Screen):
    """A screen with a controller, a message line and a hook for every new status."""

    ctl: Controller | None = ObjectProperty(None, allownone=True)
    session_role = StringProperty("")
    """The role logged in ("" for nobody)."""
    message = StringProperty("")
    message_rgba = ListProperty(OK_RGBA)
    busy = BooleanProperty(False)

    def attach(self, ctl: Controller) -> None:
        self.ctl = ctl
        ctl.bind(status=lambda _c, status: self.update(status))
        ctl.bind(role=lambda _c, role: setattr(self, "session_role", role))

    def update(self, status: dict[str, Any]) -> None:
        """Show a new status (called for every poll)."""

    def say(self, text: str, rgba: tuple[float, ...] = OK_RGBA) -> None:
        self.message, self.message_rgba = text, list(rgba)
        self.busy = False
        form = getattr(self, "form", None)
        if isinstance(form, KeypadForm):
            form.message, form.message_rgba = self.message, self.message_rgba

    def fail(self, text: str) -> None:
        self.say(text, ERROR_RGBA)

    def go(self, name: str) -> None:
        if self.manager is not None:
            self.manager.current = name

    def request(self, method: str, path: str, body: Any = None, on_done: Any = None) -> None:
        """An API call with the busy flag set until it answers."""
        if self.ctl is None:
            return
        self.busy = True

        def done(result: Any) -> None:
            self.busy = False
            if on_done is not None:
                on_done(result)

        self.ctl.call(method, path, body, done, self.fail)


class HomeScreen(KioskScreen):
    """Program, rates in clinical and bench units, reservoir, battery and the live flow trend."""

    texts = DictProperty(fmt.home_texts({}))
    fill = NumericProperty(0)
    low = NumericProperty(0)
    state = StringProperty("")

    def attach(self, ctl: Controller) -> None:
        super().attach(ctl)
        ctl.bind(on_sample=lambda _c, sample: self.add_sample(sample))

    def update(self, status: dict[str, Any]) -> None:
        self.texts = fmt.home_texts(status)
        self.fill, self.low = fmt.reservoir_fraction(status)
        self.state = str(status.get("state", ""))

    def add_sample(self, sample: dict[str, Any]) -> None:
        plot = self.ids.get("trend")
        if plot is not None and sample.get("bench_s") is not None:
            plot.add_sample(
                float(sample["bench_s"]),
                sample.get("expected_ul_per_min"),
                sample.get("measured_ul_per_min"),
                sample.get("sensor_ul_per_min"),
                sample.get("time_compression_effective"),
            )

    def start_stop(self) -> None:
        """Start or resume at once; a stop is asked first (the patient gets nothing after it)."""
        path = {"running": "/api/stop", "recovery": "/api/recovery/resume"}.get(
            self.state, "/api/start"
        )
        if path != "/api/stop":
            self.request("POST", path, None, lambda _r: self.say(""))
            return
        self.confirm_popup = ConfirmPopup(
            "Stop delivery?\nThe patient gets no drug until delivery is started again.",
            "Stop",
            lambda: self.request("POST", path, None, lambda _r: self.say("Delivery stopped")),
        )
        self.confirm_popup.open()


class FormScreen(KioskScreen):
    """A screen built around a keypad form."""

    form: KeypadForm | None = ObjectProperty(None, allownone=True)

    def add_actions(self, *actions: tuple[str, Any]) -> None:
        for text, callback in actions:
            button = Button(text=text, size_hint_x=None, width=150)
            button.bind(on_release=lambda _b, cb=callback: cb())
            self.form.actions_box.add_widget(button)

    def current_program(self) -> dict[str, Any]:
        return dict(fmt.view(self.ctl.status if self.ctl else {})["program"] or {})

    def propose(self, program: dict[str, Any]) -> None:
        """Ask the service to check *program*; its Finish screen shows old and new side by side."""
        self.say("Checking…")
        self.request("POST", "/api/program/propose", {"program": program}, self._proposed)

    def _proposed(self, proposal: dict[str, Any]) -> None:
        self.say("")
        self.manager.get_screen("finish").show(proposal, back_to=self.name)
        self.go("finish")

    def values_or_complain(self) -> dict[str, float | None] | None:
        empty = missing(tuple(self.form.fields), self.form.values)
        if empty:
            self.fail(f"Enter {', '.join(empty)}")
            return None
        return dict(self.form.values)


class ProgramScreen(FormScreen):
    """Wizard step 1: choose the mode and enter its values; Review asks the service to check."""

    mode = StringProperty("continuous")
    proposal = ObjectProperty(None, allownone=True)

    def on_kv_post(self, _base: Any) -> None:
        self.form = self.ids.form
        self.add_actions(("Review", self.review))
        self.choose("continuous")

    def on_pre_enter(self, *_args: Any) -> None:
        self.choose(self.mode)

    def choose(self, mode: str) -> None:
        self.mode = mode
        fields = PROGRAM_FIELDS[mode]
        self.form.load(fields, initial_values(fields, self.current_program()))
        self.say("")

    def review(self) -> None:
        values = self.values_or_complain()
        if values is not None:
            self.propose(program_payload(self.mode, values))


class FinishScreen(KioskScreen):
    """Wizard last step: old and new settings side by side; confirm (accepting warnings) or back."""

    proposal = ObjectProperty(None, allownone=True)
    rows = ListProperty([])
    warnings = StringProperty("")
    accept = BooleanProperty(False)
    back_to = StringProperty("program")

    def show(self, proposal: dict[str, Any], back_to: str = "program") -> None:
        self.proposal = proposal
        self.back_to = back_to
        self.rows = fmt.settings_rows(proposal.get("old"), proposal.get("new") or {})
        self.warnings = "\n".join(
            str(w.get("message", w)) if isinstance(w, dict) else str(w)
            for w in proposal.get("warnings") or []
        )
        self.accept = False
        self.say("")
        grid = self.ids.rows
        grid.clear_widgets()
        for cells in (("", "Current", "New"), *self.rows):
            changed = cells[1] != cells[2] and cells[0] != ""
            for index, text in enumerate(cells):
                grid.add_widget(
                    Label(
                        text=text,
                        bold=index == 0 or cells[0] == "",
                        color=WARN_RGBA if changed and index == 2 else (1, 1, 1, 1),
                        font_size=17,
                    )
                )

    def confirm(self) -> None:
        if self.proposal is None:
            return
        if self.warnings and not self.accept:
            self.fail("Confirm the soft-limit warning first")
            return
        body = {"proposal_id": self.proposal["proposal_id"], "accept_warnings": self.accept}
        self.request("POST", "/api/program/confirm", body, self._confirmed)

    def _confirmed(self, _reply: Any) -> None:
        self.proposal = None
        self.say("Program updated")
        self.go("home")


class BolusScreen(FormScreen):
    """Single, priming and bridge boluses (each a program confirmed on the Finish screen) and the
    patient-bolus button with its lockout countdown."""

    kind = StringProperty("single")
    patient_text = StringProperty("Patient bolus")
    patient_available = BooleanProperty(False)
    next_allowed_at = StringProperty("")

    def on_kv_post(self, _base: Any) -> None:
        self.form = self.ids.form
        self.add_actions(("Review", self.review))
        self.choose("single")

    def choose(self, kind: str, preset: dict[str, Any] | None = None) -> None:
        self.kind = kind
        current = self.current_program()
        defaults = {
            "old_concentration_ug_per_ml": current.get("concentration_ug_per_ml"),
            "old_dose_ug_per_day": current.get("dose_ug_per_day"),
            **current,
            **(preset or {}),
        }
        self.form.load(BOLUS_FIELDS[kind], initial_values(BOLUS_FIELDS[kind], defaults))
        self.say("")

    def review(self) -> None:
        values = self.values_or_complain()
        if values is not None:
            self.propose(bolus_program(self.kind, values, self.current_program()))

    def patient_bolus(self) -> None:
        self.request("POST", "/api/bolus/patient", None, self._patient_answer)

    def _patient_answer(self, reply: dict[str, Any]) -> None:
        self.next_allowed_at = str(reply.get("next_allowed_at") or "")
        if reply.get("granted"):
            self.say("Patient bolus granted")
        else:
            self.fail(f"Refused: {reply.get('message') or reply.get('reason')}")
        if self.ctl is not None:
            self.update(self.ctl.status)

    def update(self, status: dict[str, Any]) -> None:
        self.patient_available = fmt.view(status)["patient_bolus"] is not None
        wait_s = fmt.patient_seconds_until(self.next_allowed_at, status)
        if not self.patient_available:
            self.patient_text = "Patient bolus\nnot programmed"
        elif wait_s > 0:
            self.patient_text = f"Patient bolus\nlocked {fmt.patient_duration(wait_s)}"
        else:
            self.patient_text = "Patient bolus"


class RefillScreen(FormScreen):
    """Guided refill: stop, enter the withdrawn volume, verdict, fill, bridge bolus, alarm date."""

    step = StringProperty("stop")
    state = StringProperty("")
    verdict = DictProperty({})
    verdict_title = StringProperty("")
    verdict_rgba = ListProperty(OK_RGBA)
    result_text = StringProperty("")
    bridge_offered = BooleanProperty(False)
    old_program = DictProperty({})
    filled = DictProperty({})
    explanation = StringProperty("")
    amounts = StringProperty("")
    steps_text = StringProperty("")
    awaiting_valve = BooleanProperty(False)
    STEPS = (
        ("stop", "1 Stop"),
        ("withdrawn", "2 Aspirate"),
        ("verdict", "3 Verdict"),
        ("fill", "4 Fill"),
        ("done", "5 Done"),
    )

    def on_kv_post(self, _base: Any) -> None:
        self.form = self.ids.form
        self.add_actions(("Next", self.next_from_form))
        self.ids.steps_manager.transition = NoTransition()
        self.on_step(self, self.step)

    def on_step(self, _instance: Any, step: str) -> None:
        self.ids.steps_manager.current = "form" if step in ("withdrawn", "fill") else step
        self.steps_text = "   ".join(
            f"[b][color=33ff66]{label}[/color][/b]" if key == step else label
            for key, label in self.STEPS
        )

    def on_pre_enter(self, *_args: Any) -> None:
        if self.step == "done":
            self.restart()

    def restart(self) -> None:
        self.step = "stop"
        self.verdict = {}
        self.bridge_offered = False
        self.say("")

    def update(self, status: dict[str, Any]) -> None:
        self.state = str(status.get("state", ""))
        if self.step == "stop":
            self.old_program = fmt.view(status)["program"] or {}
        refill = status.get("refill") or {}
        if self.awaiting_valve and (self.step, refill.get("phase")) == ("withdrawn", "aspirated"):
            self.awaiting_valve = False
            self._checked(refill.get("verdict") or {})
        elif self.awaiting_valve and (self.step, refill.get("phase")) == ("fill", "filled"):
            self.awaiting_valve = False
            self._filled(refill.get("result") or {})

    def stop_pump(self) -> None:
        self.request("POST", "/api/stop", None, lambda _r: self.say("Pump stopped"))

    def to_withdrawn(self) -> None:
        self.step = "withdrawn"
        self.form.load(WITHDRAWN_FIELDS, initial_values(WITHDRAWN_FIELDS))
        refill = ((self.ctl.status if self.ctl else {}) or {}).get("refill") or {}
        if refill.get("valve"):  # the rig empties the syringe to waste and measures it
            self.awaiting_valve = True
            self.request("POST", "/api/refill/aspirate", None, lambda _r: None)
            self.say("Aspirating the reservoir to waste…")
            return
        self.say("Aspirate the reservoir completely, then enter the volume withdrawn")

    def next_from_form(self) -> None:
        values = self.values_or_complain()
        if values is None:
            return
        if self.step == "withdrawn":
            self.request("POST", "/api/refill/withdrawn", values, self._checked)
        elif self.step == "fill":
            self.request("POST", "/api/refill/fill", values, self._filled)

    def _checked(self, verdict: dict[str, Any]) -> None:
        self.verdict = verdict
        significant = bool(verdict.get("significant"))
        discrepancy = fmt.number(verdict.get("difference_ml"), 2, "mL")
        self.verdict_title = (
            f"SIGNIFICANT DISCREPANCY {discrepancy}"
            if significant
            else f"Within tolerance ({discrepancy})"
        )
        self.verdict_rgba = list(WARN_RGBA if significant else OK_RGBA)
        self.amounts = (
            f"Expected {fmt.number(verdict.get('expected_ml'), 2, 'mL')}   "
            f"Withdrawn {fmt.number(verdict.get('withdrawn_ml'), 2, 'mL')}"
        )
        suspicion = str(verdict.get("suspicion") or "none")
        self.explanation = "\n".join(
            part
            for part in (
                "" if suspicion == "none" else f"Suspected: {suspicion.replace('_', ' ')}",
                str(verdict.get("explanation") or ""),
            )
            if part
        )
        self.step = "verdict"
        self.say("")

    def to_fill(self) -> None:
        self.step = "fill"
        current = {"concentration_ug_per_ml": self.old_program.get("concentration_ug_per_ml")}
        self.form.load(FILL_FIELDS, initial_values(FILL_FIELDS, current))
        valve = bool(((self.ctl.status if self.ctl else {}) or {}).get("refill", {}).get("valve"))
        self.say(
            "Enter volume and concentration: the rig draws them from the supply"
            if valve
            else "Refill the bench syringe by hand and seat the plunger (the full switch closes "
            "when it holds its whole volume), then enter volume and concentration"
        )

    def _filled(self, reply: dict[str, Any]) -> None:
        if reply.get("phase") == "filling":  # the refill valve: the rig draws from the supply
            self.awaiting_valve = True
            self.say("Filling from the supply…")
            return
        self.bridge_offered = bool(reply.get("bridge_bolus_offered"))
        reservoir = {**fmt.view(self.ctl.status if self.ctl else {})["reservoir"], **reply}
        self.filled = reply
        lines = [f"Reservoir {fmt.number(reservoir.get('volume_ml'), 2, 'mL')}"]
        lines.append(f"Low-reservoir alarm {fmt.when(reservoir.get('low_alarm_at'))}")
        lines.append(f"Empty {fmt.when(reservoir.get('empty_at'))}")
        if self.bridge_offered:
            lines.append("Concentration changed: program a bridge bolus before restarting")
        self.result_text = "\n".join(lines)
        self.step = "done"
        self.say("")

    def bridge(self) -> None:
        preset = {
            "old_concentration_ug_per_ml": self.old_program.get("concentration_ug_per_ml"),
            "old_dose_ug_per_day": self.old_program.get("dose_ug_per_day"),
            "concentration_ug_per_ml": self.filled.get("concentration_ug_per_ml"),
        }
        bolus = self.manager.get_screen("bolus")
        bolus.choose("bridge", preset)
        self.go("bolus")


class AlarmsScreen(KioskScreen):
    """Active alarms: acknowledge one or all, silence for two minutes with the re-arm countdown."""

    alarms = ListProperty([])
    silence_text = StringProperty("Silence 2 min")

    def attach(self, ctl: Controller) -> None:
        super().attach(ctl)
        ctl.bind(silence_remaining_s=lambda _c, s: self._silence(s), role=self._rows)

    def _silence(self, seconds: float) -> None:
        self.silence_text = (
            f"Silenced\nre-arms {fmt.countdown(seconds)}" if seconds else ("Silence 2 min")
        )

    def update(self, status: dict[str, Any]) -> None:
        alarms = fmt.active_alarms(status)
        if alarms == self.alarms:
            return
        self.alarms = alarms
        self._rows()

    def _rows(self, *_args: Any) -> None:
        box = self.ids.alarm_list
        box.clear_widgets()
        if not self.alarms:
            box.add_widget(
                Label(text="No active alarms", font_size=20, size_hint_y=None, height=60)
            )
        for alarm in self.alarms:
            box.add_widget(self._row(alarm))

    def _row(self, alarm: dict[str, Any]) -> BoxLayout:
        bench = self.ctl is not None and self.ctl.role == "engineer"
        row = BoxLayout(size_hint_y=None, height=84 if bench else 64, spacing=6)
        row.add_widget(PriorityChip(priority=alarm["priority"], size_hint_x=None, width=100))
        status = "acknowledged" if alarm.get("acknowledged") else "new"
        text = Label(
            text=f"[b]{alarm.get('title', alarm.get('code'))}[/b]  ({status})\n"
            f"[size=14]{fmt.alarm_text(alarm, bench=bench)}[/size]",
            markup=True,
            halign="left",
            valign="middle",
        )
        text.bind(size=lambda label, size: setattr(label, "text_size", size))
        row.add_widget(text)
        ack = Button(text="Acknowledge", size_hint_x=None, width=160)
        ack.disabled = bool(alarm.get("acknowledged"))
        ack.bind(on_release=lambda _b: self.acknowledge(alarm))
        row.add_widget(ack)
        return row

    def acknowledge(self, alarm: dict[str, Any]) -> None:
        alarm_id = alarm.get("id", alarm.get("code"))
        self.request("POST", f"/api/alarms/{alarm_id}/acknowledge", None, None)

    def acknowledge_all(self) -> None:
        self.request("POST", "/api/alarms/acknowledge-all", None, None)

    def silence(self) -> None:
        self.request("POST", "/api/alarms/silence", {"duration_s": 120}, None)


class HistoryScreen(KioskScreen):
    """The event log (newest first) and delivered volume per patient day."""

    events_text = StringProperty("")
    days = ListProperty([])
    page = 1000
    shown = 60

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[dict[str, Any]] = []

    def on_pre_enter(self, *_args: Any) -> None:
        self.reload()

    def reload(self) -> None:
        if self.ctl is None:
            return
        self._fetch_events()
        self.ctl.get("/api/history/daily", self._days, self.fail)

    def _fetch_events(self) -> None:
        since = self.events[-1]["id"] if self.events else None
        self.ctl.get("/api/events", self._events, self.fail, since_id=since, limit=self.page)

    def _events(self, reply: list[dict[str, Any]]) -> None:
        self.say("")
        self.events = (self.events + list(reply or []))[-self.shown :]
        if len(reply or []) == self.page:
            self._fetch_events()
            return
        self.events_text = "\n".join(fmt.event_line(e) for e in reversed(self.events))
        self.events_text = self.events_text or "No events yet"

    def _days(self, reply: list[dict[str, Any]]) -> None:
        self.days = list(reply or [])


class LoginScreen(KioskScreen):
    """Choose a role and type its PIN."""

    role = StringProperty("clinician")
    logged_in_as = StringProperty("")

    def attach(self, ctl: Controller) -> None:
        super().attach(ctl)
        ctl.bind(role=lambda _c, role: setattr(self, "logged_in_as", role))

    def log_in(self) -> None:
        pad = self.ids.pinpad
        if not pad.pin or self.ctl is None:
            self.fail("Type the PIN")
            return
        self.busy = True
        self.ctl.login(self.role, pad.pin, self._logged_in, self.fail)
        pad.pin = ""

    def _logged_in(self, _token: str) -> None:
        self.say(f"Logged in as {self.role}")
        self.go("home")

    def log_out(self) -> None:
        if self.ctl is not None:
            self.ctl.logout()
        self.say("Logged out")


class SettingsScreen(KioskScreen):
    """Time compression, trend window and display settings."""

    compression = StringProperty("")
    nominal = NumericProperty(0)
    trend_window_s = NumericProperty(60)
    link_text = StringProperty("")

    def update(self, status: dict[str, Any]) -> None:
        self.compression = fmt.status_compression(status)
        clock = status.get("clock") or {}
        self.nominal = float(
            clock.get("time_compression_nominal") or status.get("time_compression") or 0
        )
        if self.ctl is not None:
            link = "live" if self.ctl.telemetry_linked else "down"
            self.link_text = f"  Service {self.ctl.url}\n  telemetry {link}"

    def set_compression(self, factor: float) -> None:
        """Asked first: every patient-time figure on the rig moves at the new pace."""
        if factor == self.nominal:
            self.say(f"Time is already ×{factor:g}")
            return
        self.confirm_popup = ConfirmPopup(
            f"Change time compression to {fmt.compression(factor)}?\n"
            "The patient clock, the forecasts and the alarm dates move at the new pace.",
            f"Set ×{factor:g}",
            lambda: self.request(
                "PUT",
                "/api/settings",
                {"time_compression": factor},
                lambda _r: self.say(f"Time set to ×{factor:g}"),
            ),
        )
        self.confirm_popup.open()

    def set_trend_window(self, seconds: float) -> None:
        self.trend_window_s = seconds
        self.manager.get_screen("home").ids.trend.window_s = seconds

    def toggle_fullscreen(self) -> None:
        from kivy.core.window import Window

        Window.fullscreen = "auto" if not Window.fullscreen else False


class FaultsScreen(KioskScreen):
    """Trainer's fault injection on the simulated bench."""

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for key, _label in FAULT_FRACTIONS:
            body[key] = round(self.ids[key].value, 2)
        for key, _label in FAULT_SWITCHES:
            body[key] = self.ids[key].state == "down"
        return body

    def apply(self) -> None:
        self.request("POST", "/api/faults", self.payload(), lambda _r: self.say("Faults applied"))

    def air_bubble(self) -> None:
        body = {"air_bubble_ul": AIR_BUBBLE_UL}
        self.request("POST", "/api/faults", body, lambda _r: self.say("Air bubble injected"))

    def clear_all(self) -> None:
        for key, _label in FAULT_FRACTIONS:
            self.ids[key].value = 0
        for key, _label in FAULT_SWITCHES:
            self.ids[key].state = "normal"
        self.request("DELETE", "/api/faults", None, lambda _r: self.say("Faults cleared"))
