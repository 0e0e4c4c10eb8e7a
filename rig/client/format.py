"""Text for people from the service's JSON: numbers with units, patient-time dates, old-vs-new
rows. Shared by the command line and the kiosk; pure functions, tested directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

TRAINING_NOTICE = "Training device — not for clinical use"
DASH = "—"

MODE_LABELS = {
    "stopped": "Stopped",
    "continuous": "Simple continuous",
    "flex": "Flex",
    "single_bolus": "Single bolus",
    "periodic_bolus": "Periodic bolus",
    "priming_bolus": "Priming bolus",
    "bridge_bolus": "Bridge bolus",
}


def number(value: Any, digits: int = 1, unit: str = "") -> str:
    """A number with *digits* decimals and a unit, or a dash when it is missing."""
    if value is None or isinstance(value, bool):
        return DASH
    try:
        text = f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return DASH
    return f"{text} {unit}".rstrip()


def parse_time(value: Any) -> datetime | None:
    """An ISO timestamp from the API, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def when(value: Any) -> str:
    """A patient-time timestamp as ``25 Dec 2025 14:00`` (dash when missing)."""
    moment = parse_time(value)
    return moment.strftime("%d %b %Y %H:%M") if moment else DASH


def days(hours: Any) -> str:
    """Hours as days (``30.0 days``), dash when never."""
    if hours is None:
        return DASH
    return f"{float(hours) / 24:.1f} days"


def compression(factor: Any, effective: Any = None) -> str:
    """The nominal time-compression factor, what a bench minute is worth, and the effective
    factor when the bench's limits slow the clock below it."""
    if not factor:
        return "time ×?"
    factor = float(factor)
    text = f"time ×{factor:g}  (1 bench min = {factor / 60:g} patient h)"
    if effective is not None and float(effective) < factor:
        text += f"  now ×{float(effective):.0f}: bench limit"
    return text


def status_compression(status: dict[str, Any]) -> str:
    """:func:`compression` of a status reply (nominal and effective)."""
    clock = status.get("clock") or {}
    return compression(
        clock.get("time_compression_nominal", status.get("time_compression")),
        clock.get("time_compression_effective"),
    )


def reservoir_contents(status: dict[str, Any]) -> str:
    """What the reservoir really holds, marked when it is not what the program says."""
    reservoir = status.get("reservoir") or {}
    actual = reservoir.get("concentration_ug_per_ml")
    if actual is None:
        return DASH
    text = f"holds {number(actual, 0, 'µg/mL')}"
    if reservoir.get("concentration_mismatch"):
        text += f", not {number(reservoir.get('programmed_concentration_ug_per_ml'), 0)}"
    return text


def patient_dose(status: dict[str, Any]) -> str:
    """The dose that really reached the patient since the books began."""
    delivered = status.get("delivered") or {}
    return f"to patient {number(delivered.get('patient_ug'), 1, 'µg')} in all"


def mode_label(mode: Any) -> str:
    return MODE_LABELS.get(str(mode), str(mode) if mode else DASH)


LEAD_IN_MODES = frozenset({"priming_bolus", "bridge_bolus"})
"""Modes that run a bolus first, then the program under ``then``."""


def program_mode_text(status: dict[str, Any]) -> str:
    """The mode in force: a priming or bridge bolus while it runs, then the program after it
    ("Flex (after the bridge bolus)")."""
    therapy = status.get("therapy") or {}
    program = therapy.get("program") or {}
    mode = program.get("mode") or (therapy.get("settings") or {}).get("mode")
    if mode in LEAD_IN_MODES and therapy.get("phase") != mode and program.get("then"):
        following = mode_label(program["then"].get("mode"))
        return f"{following} (after the {mode_label(mode).lower()})"
    return mode_label(mode)


def view(status: dict[str, Any]) -> dict[str, Any]:
    """The parts of a status reply the screens show, flattened from the engine's ``therapy``.

    Gives ``program`` (mode, drug, concentration, daily dose; None when no drug is programmed),
    ``reservoir`` (state and forecast together), ``battery`` and ``patient_bolus`` (the
    programmed patient-bolus block or None).
    """
    therapy = status.get("therapy") or {}
    settings = therapy.get("settings") or {}
    program = status.get("program")
    if program is None and settings.get("drug"):
        program = {
            "mode": settings.get("mode"),
            "drug": settings.get("drug"),
            "concentration_ug_per_ml": settings.get("concentration_ug_per_ml"),
            "dose_ug_per_day": settings.get("daily_dose_ug_per_day"),
        }
    reservoir = {
        **(settings.get("reservoir") or {}),
        **(therapy.get("reservoir") or {}),
        **(status.get("reservoir") or {}),
    }
    return {
        "program": program,
        "reservoir": reservoir,
        "battery": status.get("battery") or therapy.get("battery") or {},
        "patient_bolus": settings.get("patient_bolus"),
    }


def battery_text(battery: dict[str, Any]) -> str:
    state = str(battery.get("state") or DASH)
    label = {"ok": "Battery OK", "eri": "Battery ERI", "end_of_service": "END OF SERVICE"}.get(
        state, f"Battery {state}"
    )
    return f"{label} · ERI {when(battery.get('eri_at'))}"


def event_line(event: dict[str, Any]) -> str:
    """One line of the event log."""
    at = when(event.get("at_utc") or event.get("at"))
    role = f" [{event['role']}]" if event.get("role") else ""
    text = event.get("message") or event.get("detail") or ""
    return f"{at}  {event.get('kind', '')}{role}  {text}"


def settings_rows(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    old_program: dict[str, Any] | None = None,
    new_program: dict[str, Any] | None = None,
) -> list[tuple[str, str, str]]:
    """Finish screen rows (label, old, new), each label once: the settings summaries of a
    proposal, every setting of the two programs (flex steps, weekday schedules, boluses, the
    patient bolus, a lead-in bolus) and the forecasts, with every patient bolus taken."""
    old = old or {}
    rows: dict[str, list[str]] = {}

    def add(label: str, old_text: str, new_text: str) -> None:
        rows[label] = [old_text, new_text]

    old_details = dict(program_details(old_program or {}))
    new_details = dict(program_details(new_program or {}))
    detail_labels = [*new_details, *(k for k in old_details if k not in new_details)]

    def add_details(lead_in: bool) -> None:
        for label in detail_labels:
            if (label in LEAD_IN_LABELS) == lead_in:
                add(label, old_details.get(label, DASH), new_details.get(label, DASH))

    add("Mode", mode_label(old.get("mode")), mode_label(new.get("mode")))
    if old.get("one_shot_volume_ul") or new.get("one_shot_volume_ul"):
        add(
            "Lead-in bolus volume",
            number(old.get("one_shot_volume_ul"), 1, "µL"),
            number(new.get("one_shot_volume_ul"), 1, "µL"),
        )
    add_details(lead_in=True)  # a priming or bridge bolus first: what it pushes, how fast
    add("Drug", str(old.get("drug") or DASH), str(new.get("drug") or DASH))
    for label, key, digits, unit in (
        ("Concentration", "concentration_ug_per_ml", 0, "µg/mL"),
        ("Daily dose", "daily_dose_ug_per_day", 1, "µg/day"),
        ("Rate, µL/h", "rate_ul_per_h", 2, "µL/h"),
        ("Rate, mL/day", "rate_ml_per_day", 3, "mL/day"),
    ):
        add(label, number(old.get(key), digits, unit), number(new.get(key), digits, unit))
    add_details(lead_in=False)
    old_block, new_block = old.get("patient_bolus") or {}, new.get("patient_bolus") or {}
    for label, text in patient_bolus_rows(old_block, new_block):
        add(label, *text)

    def forecast(summary: dict[str, Any], part: str, key: str) -> str:
        return when((summary.get(part) or {}).get(key)) if summary.get(part) else DASH

    add("Low-reservoir alarm", *(forecast(s, "reservoir", "low_alarm_at") for s in (old, new)))
    add("Reservoir empty", *(forecast(s, "reservoir", "empty_at") for s in (old, new)))
    if old.get("worst_case") or new.get("worst_case"):
        add(
            "Low alarm, every bolus taken",
            *(forecast(s, "worst_case", "low_alarm_at") for s in (old, new)),
        )
        add(
            "Empty, every bolus taken", *(forecast(s, "worst_case", "empty_at") for s in (old, new))
        )
    return [(label, texts[0], texts[1]) for label, texts in rows.items()]


def patient_bolus_rows(
    old: dict[str, Any], new: dict[str, Any]
) -> list[tuple[str, tuple[str, str]]]:
    """The patient-bolus settings of two programs (a dash where one has none)."""
    if not old and not new:
        return []
    rows = []
    for label, key, digits, unit in (
        ("Patient bolus dose", "dose_ug", 1, "µg"),
        ("Patient bolus duration", "duration_min", 0, "min"),
        ("Patient bolus lockout", "lockout_min", 0, "min"),
        ("Patient boluses per 24 h", "max_per_24h", 0, ""),
    ):
        rows.append(
            (label, (number(old.get(key), digits, unit), number(new.get(key), digits, unit)))
        )
    return rows


def program_details(program: dict[str, Any]) -> list[tuple[str, str]]:
    """Every setting of a program beyond its summary: a lead-in bolus and its catheter, flex
    steps and weekday schedules, scheduled boluses (labels unique within one program)."""
    details: list[tuple[str, str]] = []
    main = program
    if program.get("mode") in ("priming_bolus", "bridge_bolus"):
        catheter = program.get("catheter") or {}
        details.append(
            (
                "Catheter",
                f"{number(catheter.get('length_cm'), 1, 'cm')} × "
                f"{number(catheter.get('ul_per_cm'), 2, 'µL/cm')} + "
                f"{number(catheter.get('pump_tubing_ul'), 0, 'µL')}",
            )
        )
        if program["mode"] == "bridge_bolus":
            details.append(
                (
                    "Old concentration",
                    number(program.get("old_concentration_ug_per_ml"), 0, "µg/mL"),
                )
            )
            details.append(
                ("Old daily dose", number(program.get("old_dose_ug_per_day"), 1, "µg/day"))
            )
        name = "Priming" if program["mode"] == "priming_bolus" else "Bridge"
        _volume_ul, rate_ul_per_h, hours = lead_in_figures(program)
        details.append((f"{name} rate", number(rate_ul_per_h, 2, "µL/h")))
        details.append(
            (f"{name} duration", patient_duration(None if hours is None else hours * 3600))
        )
        main = program.get("then") or {}
        details.append(("Then", mode_label(main.get("mode"))))
    if main.get("mode") == "continuous" and main is not program:
        details.append(("Then daily dose", number(main.get("dose_ug_per_day"), 1, "µg/day")))
    for index, step in enumerate(main.get("steps") or [], start=1):
        details.append((f"Flex step {index}", _step_text(step)))
    for day, steps in (main.get("weekdays") or {}).items():
        for index, step in enumerate(steps, start=1):
            details.append((f"{str(day).capitalize()} step {index}", _step_text(step)))
    if main.get("mode") == "single_bolus":
        details.append(("Bolus dose", number(main.get("dose_ug"), 1, "µg")))
        details.append(("Bolus duration", number(main.get("duration_min"), 0, "min")))
    if main.get("mode") == "periodic_bolus":
        details.append(
            ("Background dose", number(main.get("background_dose_ug_per_day"), 1, "µg/day"))
        )
        details.append(("Bolus dose", number(main.get("bolus_dose_ug"), 1, "µg")))
        details.append(("Bolus duration", number(main.get("bolus_duration_min"), 0, "min")))
        if main.get("every_h"):
            details.append(
                ("Boluses", f"every {main['every_h']} h from {main.get('first_at', '00:00')}")
            )
        else:
            details.append(("Boluses", "at " + ", ".join(main.get("times") or [])))
    return details


CATHETER_KEYS = ("length_cm", "ul_per_cm", "pump_tubing_ul")
LEAD_IN_LABELS = frozenset(
    {
        "Catheter",
        "Old concentration",
        "Old daily dose",
        "Priming rate",
        "Priming duration",
        "Bridge rate",
        "Bridge duration",
        "Then",
    }
)


def lead_in_figures(program: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """Volume (µL), rate (µL/h) and duration (h) of a priming or bridge bolus program: the
    catheter's volume, at the priming rate or at the old daily dose and concentration (None
    where a value is missing)."""
    catheter = program.get("catheter") or {}
    parts = [catheter.get(key) for key in CATHETER_KEYS]
    volume_ul = None
    if all(isinstance(part, int | float) for part in parts):
        volume_ul = parts[0] * parts[1] + parts[2]
    if program.get("mode") == "priming_bolus":
        rate_ul_per_h = program.get("rate_ul_per_h")
    else:
        old_conc = program.get("old_concentration_ug_per_ml")
        old_dose = program.get("old_dose_ug_per_day")
        rate_ul_per_h = old_dose / old_conc * 1000 / 24 if old_conc and old_dose else None
    hours = volume_ul / rate_ul_per_h if volume_ul and rate_ul_per_h else None
    return volume_ul, rate_ul_per_h, hours


def _step_text(step: dict[str, Any]) -> str:
    return f"from {step.get('start')}  {number(step.get('dose_ug_per_day'), 1, 'µg/day')}"


def patient_duration(seconds: Any) -> str:
    """A patient-time span as ``2 h 05 min`` (or ``45 min``); dash when missing."""
    if seconds is None:
        return DASH
    minutes = max(0, round(float(seconds) / 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def patient_seconds_until(moment: Any, status: dict[str, Any]) -> float:
    """Patient seconds from the status's patient time until *moment* (0 if past or unknown)."""
    target, now = parse_time(moment), parse_time(status.get("patient_time"))
    if target is None or now is None:
        return 0.0
    return max(0.0, (target - now).total_seconds())


def rate_clinical(rates: dict[str, Any]) -> str:
    """The rate in force in clinical units: ``300.0 µg/day   25.00 µL/h   0.600 mL/day``."""
    return (
        f"{number(rates.get('dose_ug_per_day'), 1, 'µg/day')}   "
        f"{number(rates.get('rate_ul_per_h'), 2, 'µL/h')}   "
        f"{number(rates.get('rate_ml_per_day'), 3, 'mL/day')}"
    )


def rate_bench(rates: dict[str, Any]) -> str:
    """The same rate on the bench: ``bench 600.00 µL/min   489.3 steps/s``."""
    return (
        f"bench {number(rates.get('bench_ul_per_min'), 2, 'µL/min')}   "
        f"{number(rates.get('bench_steps_per_s'), 1, 'steps/s')}"
    )


def alarm_text(alarm: dict[str, Any], *, bench: bool = False) -> str:
    """An alarm's message for people: raised when (patient time), what was found in clinical
    units, its state; with *bench* (engineer views) also what the bench measured."""
    raised = alarm.get("raised_patient_time")
    parts = [f"{when(raised)}: " if raised else "", str(alarm.get("message") or "")]
    if alarm.get("rechecking"):
        parts.append(" — re-checking with delivery running")
    elif alarm.get("acknowledged") and alarm.get("condition_present"):
        parts.append(" — acknowledged, condition still present")
    if bench and alarm.get("detail"):
        parts.append(f"\n{alarm['detail']}")
    return "".join(parts)
