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

from rig.common.schedule import MINUTES_PER_DAY, schedule_daily_total_ug
from ui import format as fmt
from ui.controller import Controller
from ui.forms import (
    AIR_BUBBLE_UL,
    BOLUS_FIELDS,
    FAULT_FRACTIONS,
    FAULT_SWITCHES,
    FILL_FIELDS,
    WITHDRAWN_FIELDS,
    Field,
    bolus_program,
    initial_values,
    missing,
)
from ui.widgets import ConfirmPopup, KeypadForm, PriorityChip
from ui.wizard import (
    EVERY,
    MAX_FLEX_STEPS,
    TIME_OF_DAY_RULE,
    WEEKDAYS,
    Draft,
    Step,
    draft_from_program,
    home_program_text,
    keyed_time,
    time_key,
)

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
    program_detail = StringProperty("")  # flex steps, a pending bridge (ui.wizard)

    def attach(self, ctl: Controller) -> None:
        super().attach(ctl)
        ctl.bind(on_sample=lambda _c, sample: self.add_sample(sample))

    def update(self, status: dict[str, Any]) -> None:
        self.texts = fmt.home_texts(status)
        self.fill, self.low = fmt.reservoir_fraction(status)
        self.state = str(status.get("state", ""))
        self.program_detail = home_program_text(status)

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

    def add_actions(self, *actions: tuple[str, Any], width: float = 150) -> list[Button]:
        buttons = []
        for text, callback in actions:
            button = Button(text=text, size_hint_x=None, width=width)
            button.bind(on_release=lambda _b, cb=callback: cb())
            self.form.actions_box.add_widget(button)
            buttons.append(button)
        return buttons

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
    """The Program wizard: a mode (continuous, flex, periodic, single bolus, stopped), an optional
    patient bolus and an optional priming or bridge bolus before it; Review asks the service.

    The draft starts as the program in force (a bridge follows it by default) and is kept while
    the flex editor or the Finish screen is open.
    """

    mode = StringProperty("continuous")
    lead_in = StringProperty("")
    patient_bolus = BooleanProperty(False)

    def __init__(self, **kwargs: Any) -> None:
        self.draft = Draft()
        self.keep_draft = False
        super().__init__(**kwargs)

    def on_kv_post(self, _base: Any) -> None:
        self.form = self.ids.form
        self.steps_button = self.add_actions(("Steps…", self.edit_steps), width=120)[0]
        self.add_actions(("Review", self.review))
        self.form.bind(values=lambda *_a: self._sync())
        self._show()

    def on_pre_enter(self, *_args: Any) -> None:
        if self.keep_draft:
            self.keep_draft = False
            self._show()
        else:
            self.load_current()

    def load_current(self) -> None:
        """A fresh draft of the program in force, with the pump's catheter."""
        status = self.ctl.status if self.ctl else {}
        program = (status.get("therapy") or {}).get("program") or fmt.view(status)["program"]
        self.draft = draft_from_program(program, status.get("catheter"))
        self._show()
        self.say("")

    def preset_bridge(self, pending: dict[str, Any]) -> None:
        """After a refill: a bridge bolus from the old to the new concentration, followed by
        the program in force (the wizard's draft, editable)."""
        self.load_current()
        status = self.ctl.status if self.ctl else {}
        settings = (status.get("therapy") or {}).get("settings") or {}
        self.draft.lead_in = "bridge"
        self.draft.values.update(
            concentration_ug_per_ml=pending.get("new_concentration_ug_per_ml"),
            old_concentration_ug_per_ml=pending.get("old_concentration_ug_per_ml"),
            old_dose_ug_per_day=settings.get("daily_dose_ug_per_day"),
        )
        self.keep_draft = True

    def choose(self, mode: str) -> None:
        self.draft.mode = mode
        self._show()

    def choose_lead_in(self, lead_in: str) -> None:
        """Priming or bridge before the program (again: none)."""
        self.draft.lead_in = None if self.draft.lead_in == lead_in else lead_in
        if self.draft.lead_in == "bridge" and not self.draft.values.get("old_dose_ug_per_day"):
            settings = ((self.ctl.status if self.ctl else {}).get("therapy") or {}).get(
                "settings"
            ) or {}
            self.draft.values["old_concentration_ug_per_ml"] = settings.get(
                "concentration_ug_per_ml"
            )
            self.draft.values["old_dose_ug_per_day"] = settings.get("daily_dose_ug_per_day")
        self._show()

    def toggle_patient_bolus(self) -> None:
        self.draft.patient_bolus = not self.draft.patient_bolus
        self._show()

    def _show(self) -> None:
        draft = self.draft
        self.mode, self.lead_in = draft.mode, draft.lead_in or ""
        self.patient_bolus = draft.has_patient_bolus
        fields = draft.fields()
        self.form.load(fields, {f.key: draft.values.get(f.key) for f in fields})
        self.steps_button.disabled = draft.mode != "flex"
        self.steps_button.opacity = 1 if draft.mode == "flex" else 0
        self._sync()

    def _sync(self) -> None:
        typed = self.form.values
        interval_keys = ("every_h", "first_at")
        if any(key in typed and typed[key] != self.draft.values.get(key) for key in interval_keys):
            self.draft.bolus_times = None  # an interval typed: it replaces the bolus times
        self.draft.values.update(typed)
        self.form.summary = self.draft.summary()

    def edit_steps(self) -> None:
        self.keep_draft = True
        self.manager.get_screen("flex").edit(self.draft)
        self.go("flex")

    def review(self) -> None:
        if self.values_or_complain() is None:
            return
        if self.draft.mode == "flex" and self.draft.daily_totals_ug() is None:
            self.fail("Enter the dose of every flex step (Steps…)")
            return
        first_at = self.draft.values.get("first_at")
        periodic = self.draft.mode == "periodic_bolus" and self.draft.bolus_times is None
        if periodic and keyed_time(first_at) is None:
            self.fail(f"First bolus at: {TIME_OF_DAY_RULE}")
            return
        self.keep_draft = True
        self.propose(self.draft.payload())


class FlexScreen(FormScreen):
    """Flex editor: up to 13 steps a day (start HH:MM, dose µg/day), added, removed and
    reordered; every day's schedule or a weekday's own; daily totals computed live."""

    day = StringProperty(EVERY)
    own_days = ListProperty([])

    def __init__(self, **kwargs: Any) -> None:
        self.draft = Draft()
        super().__init__(**kwargs)

    def on_kv_post(self, _base: Any) -> None:
        self.form = self.ids.form
        self.add_actions(
            ("Add", self.add_step),
            ("Remove", self.remove_step),
            ("Up", lambda: self.move(-1)),
            ("Down", lambda: self.move(1)),
            width=86,
        )
        self.add_actions(("Done", self.done), width=96)
        self.form.bind(values=lambda *_a: self._sync())

    def edit(self, draft: Draft) -> None:
        self.draft = draft
        self.day = EVERY
        self._show(0)
        self.say("")

    @property
    def steps(self) -> list[Step]:
        return self.draft.flex.get(self.day, self.draft.flex[EVERY])

    def selected(self) -> int:
        return int(self.form.active.rsplit("_", 1)[1]) if self.form.active else 0

    def choose_day(self, day: str) -> None:
        """Show every day's schedule, or a weekday's (its own from the first edit)."""
        self.day = day
        self._show(0)

    def same_as_every_day(self) -> None:
        """The weekday shown follows every day's schedule again."""
        self.draft.flex.pop(self.day, None)
        self._show(0)

    def _own_steps(self) -> list[Step]:
        """The steps of the day shown, as its own list (a weekday's copy made on first edit)."""
        if self.day not in self.draft.flex:
            self.draft.flex[self.day] = list(self.draft.flex[EVERY])
        return self.draft.flex[self.day]

    def _show(self, select: int) -> None:
        fields: list[Field] = []
        values: dict[str, float | None] = {}
        for index, (start, dose) in enumerate(self.steps):
            fields += [
                Field(f"start_{index}", f"{index + 1} from", "", 0, time_of_day=True),
                Field(f"dose_{index}", f"{index + 1}", "µg/day", 1),
            ]
            values[f"start_{index}"], values[f"dose_{index}"] = time_key(start), dose
        self.form.load(tuple(fields), values)
        self.form.lock("start_0")  # the first step starts at midnight
        self.form.select(f"dose_{min(select, len(self.steps) - 1)}")
        self.own_days = [d for d in WEEKDAYS if d in self.draft.flex]
        self._sync()

    def _sync(self) -> None:
        """The typed values into the day's steps (a start typed as HHMM); totals live."""
        values = self.form.values
        steps, problem = [], ""
        for index, (start, dose) in enumerate(self.steps):
            typed = values.get(f"start_{index}")
            if index == 0:
                start = 0  # the first step starts at midnight
            elif typed is not None:
                minutes = keyed_time(typed)
                if minutes is None:
                    problem = f"Step {index + 1}: {TIME_OF_DAY_RULE}"
                else:
                    start = minutes
            steps.append((start, values.get(f"dose_{index}", dose)))
        if steps != self.steps:
            self._own_steps()[:] = steps
        if problem:
            self.fail(problem)
        self.form.summary = self._summary()

    def _out_of_order(self) -> str:
        for day, steps in self.draft.flex.items():
            starts = [start for start, _dose in steps]
            if starts != sorted(set(starts)):
                name = "every day" if day == EVERY else day.capitalize()
                return f"Steps of {name} must start in time order, each after the one before"
        return ""

    def _summary(self) -> str:
        """The day shown (its steps and total) and the program's daily total; any problem."""
        steps = self.steps
        doses = [dose for _start, dose in steps]
        name = "Every day" if self.day == EVERY else self.day.capitalize()
        if self.day != EVERY and self.day not in self.draft.flex:
            name += " (same as every day)"
        day_total = (
            fmt.number(schedule_daily_total_ug([(s, d or 0.0) for s, d in steps]), 1, "µg/day")
            if None not in doses
            else "enter every dose"
        )
        lines = [f"{name}: {len(steps)} steps, {day_total}", self.draft.summary().splitlines()[0]]
        if self.message:
            lines.insert(0, self.message)
        return "\n".join(lines)

    def say(self, text: str, rgba: tuple[float, ...] = OK_RGBA) -> None:
        super().say(text, rgba)
        if self.form is not None:  # the actions fill the message line: shown here
            self.form.summary = self._summary()

    def add_step(self) -> None:
        steps = self.steps
        if len(steps) >= MAX_FLEX_STEPS:
            self.fail(f"At most {MAX_FLEX_STEPS} steps a day")
            return
        index = self.selected()
        start, dose = steps[index]
        end = steps[index + 1][0] if index + 1 < len(steps) else MINUTES_PER_DAY
        if end - start < 2:
            self.fail("No room after this step: add it after another one")
            return
        self._own_steps().insert(index + 1, ((start + end) // 2, dose))
        self._show(index + 1)

    def remove_step(self) -> None:
        steps, index = self.steps, self.selected()
        if len(steps) == 1:
            self.fail("A day keeps at least one step")
            return
        own = self._own_steps()
        del own[index]
        own[0] = (0, own[0][1])  # the first step always starts at midnight
        self._show(index)

    def move(self, delta: int) -> None:
        """Swap the selected step's dose with its neighbour's (the times stay in order)."""
        index = self.selected()
        other = index + delta
        if not 0 <= other < len(self.steps):
            return
        own = self._own_steps()
        (start_a, dose_a), (start_b, dose_b) = own[index], own[other]
        own[index], own[other] = (start_a, dose_b), (start_b, dose_a)
        self._show(other)

    def done(self) -> None:
        problem = self._out_of_order()
        if problem:
            self.fail(problem)
            return
        every = self.draft.flex[EVERY]
        for day in [d for d in WEEKDAYS if self.draft.flex.get(d) == every]:
            del self.draft.flex[day]
        self.go("program")


class FinishScreen(KioskScreen):
    """Wizard last step: every setting that changes, old and new side by side (changed rows
    highlighted, forecasts included); confirm (accepting warnings) or back. A bridge bolus
    starts delivery once confirmed."""

    proposal = ObjectProperty(None, allownone=True)
    rows = ListProperty([])
    warnings = StringProperty("")
    accept = BooleanProperty(False)
    back_to = StringProperty("program")

    def show(self, proposal: dict[str, Any], back_to: str = "program") -> None:
        self.proposal = proposal
        self.back_to = back_to
        self.rows = fmt.settings_rows(
            proposal.get("old"),
            proposal.get("new") or {},
            old_program=proposal.get("old_program"),
            new_program=proposal.get("program"),
        )
        self.warnings = "\n".join(
            str(w.get("message", w)) if isinstance(w, dict) else str(w)
            for w in proposal.get("warnings") or []
        )
        self.accept = False
        self.say("")
        # Only the rows in view are built (a RecycleView): quick on the Pi however many.
        self.ids.rows.data = [
            {
                "label": label,
                "old": old,
                "new": new,
                "changed": old != new,
                "height": FINISH_ROW_PX if max(map(len, (label, old, new))) <= 24 else 52,
            }
            for label, old, new in self.rows
        ]
        self.ids.rows.scroll_y = 1

    def confirm(self) -> None:
        if self.proposal is None:
            return
        if self.warnings and not self.accept:
            self.fail("Confirm the soft-limit warning first")
            return
        body = {"proposal_id": self.proposal["proposal_id"], "accept_warnings": self.accept}
        self.request("POST", "/api/program/confirm", body, self._confirmed)

    def _confirmed(self, status: dict[str, Any]) -> None:
        mode = (self.proposal or {}).get("program", {}).get("mode")
        self.proposal = None
        if self.ctl is not None and isinstance(status, dict) and "therapy" in status:
            self.ctl.status = status  # the confirm answers with the new status: show it now
        if mode == "bridge_bolus" and status.get("state") != "running":
            if self.ctl is not None:
                self.ctl.post(
                    "/api/start",
                    None,
                    lambda _r: self._done("Bridge bolus running"),
                    lambda error: self._done(
                        f"Bridge bolus programmed, not started: {error}", ERROR_RGBA
                    ),
                )
            return
        self._done("Program updated")

    def _done(self, text: str, rgba: tuple[float, ...] = OK_RGBA) -> None:
        """The program is confirmed: Home, with what happened."""
        self.manager.get_screen("program").keep_draft = False  # next time: the new program
        self.say(text, rgba)
        self.manager.get_screen("home").say(text, rgba)
        self.go("home")


FINISH_ROW_PX = 36


class FinishRow(BoxLayout):
    """One row of the Finish table: setting, current and new; a changed row is highlighted."""

    label = StringProperty("")
    old = StringProperty("")
    new = StringProperty("")
    changed = BooleanProperty(False)


class BolusScreen(FormScreen):
    """Single bolus (a program confirmed on the Finish screen), priming and bridge boluses (in
    the Program wizard) and the patient-bolus button with its lockout countdown."""

    kind = StringProperty("single")
    patient_text = StringProperty("Patient bolus")
    patient_available = BooleanProperty(False)
    next_allowed_at = StringProperty("")

    def on_kv_post(self, _base: Any) -> None:
        self.form = self.ids.form
        self.add_actions(("Review", self.review))
        self.choose("single")

    def choose(self, kind: str) -> None:
        """Single bolus here; priming and bridge open the Program wizard with that bolus."""
        if kind != "single":
            program = self.manager.get_screen("program")
            program.load_current()
            program.choose_lead_in(kind)
            program.keep_draft = True
            self.go("program")
            return
        self.kind = kind
        current = self.current_program()
        self.form.load(BOLUS_FIELDS[kind], initial_values(BOLUS_FIELDS[kind], current))
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
    """Guided refill to the end: stop, withdrawn volume, verdict, fill, and after a new
    concentration the bridge bolus (or no bridge, with a reason), which the service requires
    before the pump may start; the bridge step is shown again whenever one is pending."""

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
    bridge_pending = DictProperty({})
    bridge_text = StringProperty("")
    STEPS = (
        ("stop", "1 Stop"),
        ("withdrawn", "2 Aspirate"),
        ("verdict", "3 Verdict"),
        ("fill", "4 Fill"),
        ("done", "5 Done"),
        ("bridge", "6 Bridge"),
    )
    NO_BRIDGE_REASONS = (
        "Catheter replaced and primed",
        "Line flushed with the new drug",
        "Trainer's decision",
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
        if self.bridge_pending:  # the offer survives leaving the screen
            self.step = "bridge"
        elif self.step in ("done", "bridge"):
            self.restart()

    def restart(self) -> None:
        self.step = "stop"
        self.verdict = {}
        self.bridge_offered = False
        self.say("")

    def update(self, status: dict[str, Any]) -> None:
        self.state = str(status.get("state", ""))
        self.bridge_pending = (status.get("refill") or {}).get("bridge_pending") or {}
        self.bridge_text = self._bridge_text(status)
        if self.step == "bridge" and not (self.bridge_pending or self.bridge_offered):
            self.restart()
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
        lines = [
            f"Reservoir {fmt.number(reservoir.get('volume_ml'), 2, 'mL')} of "
            f"{fmt.number(reply.get('concentration_ug_per_ml'), 0, 'µg/mL')}",
            f"Low-reservoir alarm {fmt.when(reservoir.get('low_alarm_at'))}",
            f"Empty {fmt.when(reservoir.get('empty_at'))}",
        ]
        if self.bridge_offered:
            lines.append("Concentration changed: a bridge bolus comes next")
        self.result_text = "\n".join(lines)
        self.step = "done"
        self.say("")

    def finish(self) -> None:
        """Done: on to the bridge while one is pending, else back to Home."""
        if self.bridge_offered or self.bridge_pending:
            self.step = "bridge"
            return
        self.restart()
        self.go("home")

    def _bridge_text(self, status: dict[str, Any]) -> str:
        pending = self.bridge_pending
        if not pending:
            return ""
        old = fmt.number(pending.get("old_concentration_ug_per_ml"), 0, "µg/mL")
        new = fmt.number(pending.get("new_concentration_ug_per_ml"), 0, "µg/mL")
        catheter = status.get("catheter") or {}
        return (
            f"Concentration changed: {old} to {new}\n"
            f"The catheter still holds {fmt.number(catheter.get('volume_ul'), 0, 'µL')} of "
            f"{old}. The pump stays stopped until a bridge bolus is programmed, or no bridge "
            "is recorded with its reason."
        )

    def bridge(self) -> None:
        """The Program wizard with a bridge bolus to the new concentration, then the program
        in force."""
        program = self.manager.get_screen("program")
        program.preset_bridge(dict(self.bridge_pending))
        self.go("program")

    def no_bridge(self, reason: str) -> None:
        """Record no bridge with *reason*; then program the new concentration."""
        pending = dict(self.bridge_pending)
        self.request(
            "POST", "/api/refill/no-bridge", {"reason": reason}, lambda _r: self._no_bridge(pending)
        )

    def _no_bridge(self, pending: dict[str, Any]) -> None:
        self.restart()
        program = self.manager.get_screen("program")
        program.load_current()
        program.draft.values["concentration_ug_per_ml"] = pending.get("new_concentration_ug_per_ml")
        program.keep_draft = True
        program.say("No bridge recorded: program the new concentration")
        self.go("program")


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
