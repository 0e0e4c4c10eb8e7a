"""The Program wizard's draft: every mode, flex schedules, patient bolus and lead-in bolus.

Pure Python (no Kivy): what each mode asks for (:meth:`Draft.fields`), the program JSON the
service's one program model takes (:meth:`Draft.payload`), the draft of a program in force
(:func:`draft_from_program`) and the live totals shown while typing (:meth:`Draft.summary`).
The service checks every value; the wizard only makes the units and totals plain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rig.client.format import (
    LEAD_IN_MODES,
    lead_in_figures,
    mode_label,
    number,
    parse_time,
    patient_duration,
)
from rig.common.schedule import format_hhmm, parse_hhmm, schedule_daily_total_ug
from ui.forms import CATHETER_FIELDS, CONCENTRATION, DAILY_DOSE, DRUG, Field

MAIN_MODES = ("continuous", "flex", "periodic_bolus", "single_bolus", "stopped")
PATIENT_BOLUS_MODES = frozenset({"continuous", "flex", "periodic_bolus"})
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_FLEX_STEPS = 13
EVERY = "every"  # the flex schedule of every day without one of its own

NEW_CONCENTRATION = Field("concentration_ug_per_ml", "New concentration", "µg/mL", 0)
MODE_FIELDS: dict[str, tuple[Field, ...]] = {
    "continuous": (DAILY_DOSE,),
    "flex": (),
    "periodic_bolus": (
        Field("background_dose_ug_per_day", "Background", "µg/day", 1, 0),
        Field("bolus_dose_ug", "Bolus dose", "µg", 1),
        Field("bolus_duration_min", "Bolus duration", "min", 0, 30),
        Field("every_h", "Bolus every", "h", 0, 6, max_digits=2),
        Field("first_at", "First bolus at", "", 0, 600, time_of_day=True),
    ),
    "single_bolus": (
        Field("dose_ug", "Bolus dose", "µg", 1, 50),
        Field("duration_min", "Duration", "min", 0, 60),
    ),
    "stopped": (),
}
PATIENT_BOLUS_FIELDS = (
    Field("pb_dose_ug", "Patient bolus", "µg", 1, 25),
    Field("pb_duration_min", "PB duration", "min", 0, 10),
    Field("pb_lockout_min", "PB lockout", "min", 0, 180),
    Field("pb_max_per_24h", "PB max", "per 24 h", 0, 4, max_digits=2),
)
PATIENT_BOLUS_KEYS = {
    "pb_dose_ug": "dose_ug",
    "pb_duration_min": "duration_min",
    "pb_lockout_min": "lockout_min",
    "pb_max_per_24h": "max_per_24h",
}
LEAD_IN_FIELDS: dict[str, tuple[Field, ...]] = {
    "priming": (*CATHETER_FIELDS, Field("rate_ul_per_h", "Priming rate", "µL/h", 0, 1000)),
    "bridge": (
        *CATHETER_FIELDS,
        Field("old_concentration_ug_per_ml", "Old concentration", "µg/mL", 0),
        Field("old_dose_ug_per_day", "Old daily dose", "µg/day", 1),
    ),
}

Step = tuple[int, float | None]  # (start minute after midnight, dose µg/day)


TIME_OF_DAY_RULE = "a time of day, 00:00 to 23:59 (type HHMM)"


def keyed_time(value: float | None) -> int | None:
    """A time typed as HHMM on the keypad (``630`` is 06:30) in minutes after midnight; None
    when nothing or no time of day was typed."""
    if value is None:
        return None
    hours, minutes = divmod(round(value), 100)
    return hours * 60 + minutes if hours < 24 and minutes < 60 else None


def time_key(minutes: int) -> float:
    """Minutes after midnight as the HHMM number the keypad shows."""
    return float(minutes // 60 * 100 + minutes % 60)


@dataclass
class Draft:
    """Everything entered in the wizard: the mode, its values, flex days, bolus options."""

    mode: str = "continuous"
    values: dict[str, float | None] = field(default_factory=dict)
    flex: dict[str, list[Step]] = field(default_factory=lambda: {EVERY: [(0, None)]})
    patient_bolus: bool = False
    lead_in: str | None = None
    bolus_times: list[str] | None = None
    """A periodic program's bolus times of day as it came (typing an interval replaces them)."""

    def fields(self) -> tuple[Field, ...]:
        """The keypad fields of this draft, in screen order."""
        concentration = NEW_CONCENTRATION if self.lead_in == "bridge" else CONCENTRATION
        fields: tuple[Field, ...] = (concentration, *MODE_FIELDS[self.mode])
        if self.has_patient_bolus:
            fields += PATIENT_BOLUS_FIELDS
        if self.lead_in is not None:
            fields += LEAD_IN_FIELDS[self.lead_in]
        return fields

    @property
    def has_patient_bolus(self) -> bool:
        return self.patient_bolus and self.mode in PATIENT_BOLUS_MODES

    # -- the program JSON --------------------------------------------------------------------
    def main_program(self) -> dict[str, Any]:
        """The program of the chosen mode (without any lead-in bolus)."""
        value = self.values.get
        program: dict[str, Any] = {
            "mode": self.mode,
            "drug": DRUG,
            "concentration_ug_per_ml": value("concentration_ug_per_ml"),
        }
        if self.mode == "flex":
            program["steps"] = schedule_json(self.flex[EVERY])
            program["weekdays"] = {
                day: schedule_json(steps) for day, steps in self.flex.items() if day != EVERY
            }
        elif self.mode == "periodic_bolus":
            program.update({f.key: value(f.key) for f in MODE_FIELDS[self.mode][:-2]})
            if self.bolus_times is not None:
                program["times"] = list(self.bolus_times)
            else:
                program["every_h"] = _whole(value("every_h"))
                first = keyed_time(value("first_at"))
                program["first_at"] = format_hhmm(first) if first is not None else None
        else:
            program.update({f.key: value(f.key) for f in MODE_FIELDS[self.mode]})
        if self.has_patient_bolus:
            block = {PATIENT_BOLUS_KEYS[f.key]: value(f.key) for f in PATIENT_BOLUS_FIELDS}
            block["max_per_24h"] = _whole(block["max_per_24h"])
            program["patient_bolus"] = block
        return program

    def payload(self) -> dict[str, Any]:
        """The program JSON to propose: the main program, behind a lead-in bolus if chosen."""
        main = self.main_program()
        if self.lead_in is None:
            return main
        value = self.values.get
        program: dict[str, Any] = {
            "mode": f"{self.lead_in}_bolus",
            "drug": DRUG,
            "concentration_ug_per_ml": main["concentration_ug_per_ml"],
            "catheter": {f.key: value(f.key) for f in CATHETER_FIELDS},
        }
        for lead_field in LEAD_IN_FIELDS[self.lead_in][len(CATHETER_FIELDS) :]:
            program[lead_field.key] = value(lead_field.key)
        program["then"] = {
            k: v for k, v in main.items() if k not in ("drug", "concentration_ug_per_ml")
        }
        return program

    # -- live totals -------------------------------------------------------------------------
    def daily_totals_ug(self) -> dict[str, float] | None:
        """Programmed µg of each weekday (None while a value is missing)."""
        value = self.values.get
        if self.mode == "continuous":
            dose = value("dose_ug_per_day")
            return None if dose is None else dict.fromkeys(WEEKDAYS, dose)
        if self.mode == "flex":
            totals = {}
            for day in WEEKDAYS:
                steps = self.flex.get(day, self.flex[EVERY])
                if any(dose is None for _start, dose in steps):
                    return None
                totals[day] = schedule_daily_total_ug([(s, d or 0.0) for s, d in steps])
            return totals
        if self.mode == "periodic_bolus":
            background, bolus = value("background_dose_ug_per_day"), value("bolus_dose_ug")
            count = self.periodic_count()
            if background is None or bolus is None or count is None:
                return None
            return dict.fromkeys(WEEKDAYS, background + bolus * count)
        return dict.fromkeys(WEEKDAYS, 0.0)

    def periodic_count(self) -> int | None:
        """Scheduled boluses a day: the times given, or 24 h over the interval."""
        if self.bolus_times is not None:
            return len(self.bolus_times)
        every_h = self.values.get("every_h")
        return round(24 / every_h) if every_h else None

    def summary(self) -> str:
        """What the entries add up to, in clinical units (shown live under the fields)."""
        lines = [self._main_summary()]
        if self.mode == "periodic_bolus" and self.bolus_times is not None:
            lines.append(f"Boluses at {', '.join(self.bolus_times)} (type an interval instead)")
        if self.has_patient_bolus:
            dose, count = self.values.get("pb_dose_ug"), self.values.get("pb_max_per_24h")
            lines.append(
                f"Patient bolus {number(dose, 1, 'µg')}, at most {number(count, 0)} per 24 h"
            )
        if self.lead_in is not None:
            lines.insert(0, self.lead_in_summary())
        return "\n".join(lines)

    def _main_summary(self) -> str:
        conc = self.values.get("concentration_ug_per_ml")
        if self.mode == "single_bolus":
            dose, minutes = self.values.get("dose_ug"), self.values.get("duration_min")
            volume = dose / conc * 1000 if dose and conc else None
            return (
                f"One bolus {number(dose, 1, 'µg')} = {number(volume, 1, 'µL')} over "
                f"{number(minutes, 0, 'min')}, then stopped"
            )
        if self.mode == "stopped":
            return "No delivery"
        totals = self.daily_totals_ug()
        if totals is None:
            return "Daily total: enter every value"
        daily = max(totals.values())
        own_days = [day for day in WEEKDAYS if day in self.flex] if self.mode == "flex" else []
        if own_days:
            daily = schedule_daily_total_ug([(s, d or 0.0) for s, d in self.flex[EVERY]])
        text = f"Daily total {number(daily, 1, 'µg/day')}"
        if conc:
            text += (
                f" = {number(daily / conc, 3, 'mL/day')} = "
                f"{number(daily / conc * 1000 / 24, 2, 'µL/h')}"
            )
        if self.mode == "periodic_bolus":
            count = self.periodic_count()
            text += (
                f"  (background {number(self.values.get('background_dose_ug_per_day'), 1)} + "
                f"{count} × {number(self.values.get('bolus_dose_ug'), 1, 'µg')})"
            )
        if self.mode == "flex":
            text = f"{len(self.flex[EVERY])} steps · {text}"
            if own_days:
                text += "  (" + ", ".join(f"{d.capitalize()} {totals[d]:.1f}" for d in own_days)
                text += ")"
        return text

    def lead_in_summary(self) -> str:
        """Volume, rate and duration of the priming or bridge bolus, before confirming."""
        program = self.payload()
        volume_ul, rate_ul_per_h, hours = lead_in_figures(program)
        name = "Priming"
        if self.lead_in == "bridge":
            old = number(program.get("old_concentration_ug_per_ml"), 0, "µg/mL")
            name = f"Bridge (old {old} in the line)"
        return (
            f"{name}: {number(volume_ul, 0, 'µL')} at {number(rate_ul_per_h, 2, 'µL/h')} "
            f"for {patient_duration(None if hours is None else hours * 3600)}, then:"
        )


def schedule_json(steps: list[Step]) -> list[dict[str, Any]]:
    return [{"start": format_hhmm(start), "dose_ug_per_day": dose} for start, dose in steps]


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


def _steps(schedule: list[dict[str, Any]]) -> list[Step]:
    steps = []
    for step in schedule:
        steps.append((parse_hhmm(str(step["start"])), float(step["dose_ug_per_day"])))
    return steps


def draft_from_program(
    program: dict[str, Any] | None, catheter: dict[str, Any] | None = None
) -> Draft:
    """The wizard's draft of a program in force (the program after any lead-in bolus), with the
    pump's catheter for a lead-in."""
    draft = Draft(values={f.key: f.default for f in _all_fields()})
    for key, value in (catheter or {}).items():
        if key in draft.values and isinstance(value, int | float):
            draft.values[key] = float(value)
    if not program:
        return draft
    concentration = program.get("concentration_ug_per_ml")
    main = program.get("then", program) if program.get("mode") in LEAD_IN_MODES else program
    draft.mode = main.get("mode", "continuous")
    if draft.mode not in MAIN_MODES:
        draft.mode = "continuous"
    draft.values["concentration_ug_per_ml"] = concentration
    for key, value in main.items():
        if key in draft.values and isinstance(value, int | float):
            draft.values[key] = float(value)
    if main.get("times"):
        draft.bolus_times = [str(text) for text in main["times"]]
    if isinstance(main.get("first_at"), str):
        hours, minutes = main["first_at"].split(":")
        draft.values["first_at"] = time_key(int(hours) * 60 + int(minutes))
    if main.get("steps"):
        draft.flex = {EVERY: _steps(main["steps"])}
        for day, schedule in (main.get("weekdays") or {}).items():
            draft.flex[day] = _steps(schedule)
    block = main.get("patient_bolus")
    if block:
        draft.patient_bolus = True
        for key, name in PATIENT_BOLUS_KEYS.items():
            draft.values[key] = float(block[name])
    return draft


def _all_fields() -> list[Field]:
    fields = [CONCENTRATION, *PATIENT_BOLUS_FIELDS]
    for group in (*MODE_FIELDS.values(), *LEAD_IN_FIELDS.values()):
        fields.extend(group)
    return fields


def home_program_text(status: dict[str, Any]) -> str:
    """Home's program block (Kivy markup): a pending bridge after a refill at a new
    concentration, and a flex program's steps today with the current one marked, kept apart
    from the daily total."""
    lines = []
    pending = (status.get("refill") or {}).get("bridge_pending")
    if pending:
        lines.append(
            "[color=ffd700]Refilled at "
            f"{number(pending.get('new_concentration_ug_per_ml'), 0, 'µg/mL')} (program "
            f"{number(pending.get('old_concentration_ug_per_ml'), 0, 'µg/mL')}): program a "
            "bridge bolus before starting (Refill)[/color]"
        )
    therapy = status.get("therapy") or {}
    program = therapy.get("program") or {}
    main = program
    if program.get("mode") in LEAD_IN_MODES:
        main = program.get("then") or {}
        running = therapy.get("phase") == program["mode"]
        lines.append(
            f"{mode_label(program['mode'])} {'running' if running else 'done'}, "
            f"then {mode_label(main.get('mode')).lower()}"
        )
    now = parse_time(status.get("patient_time"))
    if main.get("mode") == "flex" and now is not None:
        weekday = WEEKDAYS[now.weekday()]
        steps = _steps((main.get("weekdays") or {}).get(weekday) or main.get("steps") or [])
        minute = now.hour * 60 + now.minute
        current = max((i for i, (start, _d) in enumerate(steps) if start <= minute), default=0)
        start, dose = steps[current]
        lines.append(
            f"Flex step {current + 1} of {len(steps)} now: [b]{number(dose, 1, 'µg/day')}[/b] "
            f"since {format_hhmm(start)}"
        )
        lines.append(
            f"{weekday.capitalize()}: "
            + "  ".join(
                f"[b][color=33ff66]{format_hhmm(s)} {d:g}[/color][/b]"
                if i == current
                else f"{format_hhmm(s)} {d:g}"
                for i, (s, d) in enumerate(steps)
            )
        )
    return "\n".join(lines)
