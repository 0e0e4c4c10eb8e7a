"""Display text and colours from the service's JSON: pure functions, no Kivy, tested directly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rig.alarms import SIGNALS, AlarmPriority

PRIORITIES = {p.value for p in AlarmPriority}
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

# Screen colours for the catalogue's LED colour names: saturated, high contrast on black.
COLOUR_RGBA = {
    "red": (0.86, 0.0, 0.0, 1.0),
    "yellow": (1.0, 0.84, 0.0, 1.0),
    "cyan": (0.0, 0.8, 0.9, 1.0),
}
TEXT_ON_COLOUR = {"red": (1, 1, 1, 1), "yellow": (0, 0, 0, 1), "cyan": (0, 0, 0, 1)}


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


def compression(factor: Any) -> str:
    """The time-compression factor and what one bench minute is worth."""
    if not factor:
        return "time ×?"
    factor = float(factor)
    patient_h_per_bench_min = factor / 60
    return f"time ×{factor:g}  (1 bench min = {patient_h_per_bench_min:g} patient h)"


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


def home_texts(status: dict[str, Any]) -> dict[str, str]:
    """Every text of the Home screen from one status reply."""
    shown = view(status)
    program = shown["program"] or {}
    rates = status.get("rates") or {}
    reservoir = shown["reservoir"]
    battery = shown["battery"]
    capacity = reservoir.get("capacity_ml")
    volume = reservoir.get("volume_ml")
    return {
        "state": str(status.get("state", DASH)).upper(),
        "patient_time": when(status.get("patient_time")),
        "compression": compression(status.get("time_compression")),
        "drug": str(program.get("drug") or DASH).capitalize(),
        "concentration": number(program.get("concentration_ug_per_ml"), 0, "µg/mL"),
        "mode": mode_label(program.get("mode")) if program else "No program",
        "dose": number(program.get("dose_ug_per_day", rates.get("dose_ug_per_day")), 1, "µg/day"),
        "rate_clinical": (
            f"{number(rates.get('dose_ug_per_day'), 1, 'µg/day')}   "
            f"{number(rates.get('rate_ul_per_h'), 2, 'µL/h')}   "
            f"{number(rates.get('rate_ml_per_day'), 3, 'mL/day')}"
        ),
        "rate_bench": (
            f"bench {number(rates.get('bench_ul_per_min'), 2, 'µL/min')}   "
            f"{number(rates.get('bench_steps_per_s'), 1, 'steps/s')}"
        ),
        "reservoir": f"{number(volume, 2)} / {number(capacity, 0, 'mL')}",
        "to_low": f"{days(reservoir.get('hours_to_low'))} to low-reservoir alarm",
        "low_at": f"Low alarm {when(reservoir.get('low_alarm_at'))}",
        "empty_at": f"Empty {when(reservoir.get('empty_at'))}",
        "battery": battery_text(battery),
    }


def battery_text(battery: dict[str, Any]) -> str:
    state = str(battery.get("state") or DASH)
    label = {"ok": "Battery OK", "eri": "Battery ERI", "end_of_service": "END OF SERVICE"}.get(
        state, f"Battery {state}"
    )
    return f"{label} · ERI {when(battery.get('eri_at'))}"


def reservoir_fraction(status: dict[str, Any]) -> tuple[float, float]:
    """(fill fraction, low-threshold fraction) of the reservoir gauge, each 0..1."""
    reservoir = view(status)["reservoir"]
    capacity = float(reservoir.get("capacity_ml") or 0)
    if capacity <= 0:
        return 0.0, 0.0

    def clamp(value: float) -> float:
        return min(1.0, max(0.0, value / capacity))

    return (
        clamp(float(reservoir.get("volume_ml") or 0)),
        clamp(float(reservoir.get("low_threshold_ml") or 0)),
    )


@dataclass(frozen=True)
class BannerStyle:
    """How the alarm banner shows a priority: colour, text colour, flash rate (None: steady)."""

    priority: str
    rgba: tuple[float, float, float, float]
    text_rgba: tuple[float, float, float, float]
    flash_hz: float | None


def banner_style(priority: str) -> BannerStyle:
    """IEC 60601-1-8 visual signal of a priority, from the alarm catalogue (mid-range flash)."""
    signal = SIGNALS[AlarmPriority(priority)]
    return BannerStyle(
        priority, COLOUR_RGBA[signal.led_colour], TEXT_ON_COLOUR[signal.led_colour], signal.flash_hz
    )


def active_alarms(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Alarms to annunciate, highest priority first, then oldest first."""
    alarms = [a for a in status.get("alarms") or [] if a.get("priority") in PRIORITIES]
    return sorted(
        alarms, key=lambda a: (-AlarmPriority(a["priority"]).rank, str(a.get("raised_at", "")))
    )


def banner_text(alarms: list[dict[str, Any]]) -> str:
    """Headline of the banner: the top alarm's title, and how many more."""
    if not alarms:
        return ""
    top = alarms[0]
    more = f"   (+{len(alarms) - 1} more)" if len(alarms) > 1 else ""
    return f"{top.get('priority', '').upper()}: {top.get('title') or top.get('code')}{more}"


def bench_seconds_until(moment: Any, status: dict[str, Any]) -> float:
    """Bench seconds from the status's patient time until a patient-time *moment* (0 if past)."""
    target, now = parse_time(moment), parse_time(status.get("patient_time"))
    factor = float(status.get("time_compression") or 1)
    if target is None or now is None:
        return 0.0
    return max(0.0, (target - now).total_seconds() / factor)


def event_line(event: dict[str, Any]) -> str:
    """One line of the event log."""
    at = when(event.get("at_utc") or event.get("at"))
    role = f" [{event['role']}]" if event.get("role") else ""
    text = event.get("message") or event.get("detail") or ""
    return f"{at}  {event.get('kind', '')}{role}  {text}"


def countdown(seconds: Any) -> str:
    """Seconds as ``m:ss``."""
    total = max(0, round(float(seconds or 0)))
    return f"{total // 60}:{total % 60:02d}"


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
