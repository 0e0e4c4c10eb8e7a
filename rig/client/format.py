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


def settings_rows(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Finish screen rows (label, old, new) from two settings summaries of a proposal."""
    old = old or {}

    def forecast(summary: dict[str, Any], key: str) -> Any:
        return (summary.get("reservoir") or {}).get(key)

    rows = [
        ("Mode", mode_label(old.get("mode")), mode_label(new.get("mode"))),
        ("Drug", str(old.get("drug") or DASH), str(new.get("drug") or DASH)),
    ]
    for label, key, digits, unit in (
        ("Concentration", "concentration_ug_per_ml", 0, "µg/mL"),
        ("Daily dose", "daily_dose_ug_per_day", 1, "µg/day"),
        ("Rate", "rate_ul_per_h", 2, "µL/h"),
        ("Rate", "rate_ml_per_day", 3, "mL/day"),
    ):
        rows.append((label, number(old.get(key), digits, unit), number(new.get(key), digits, unit)))
    rows.append(
        (
            "Low alarm",
            when(forecast(old, "low_alarm_at")),
            when(forecast(new, "low_alarm_at")),
        )
    )
    rows.append(("Empty", when(forecast(old, "empty_at")), when(forecast(new, "empty_at"))))
    return rows


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
