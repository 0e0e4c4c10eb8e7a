"""The kiosk's display texts and colours from the service's JSON: pure functions, no Kivy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rig.client.format import (
    DASH,
    TRAINING_NOTICE,
    alarm_text,
    battery_text,
    compression,
    days,
    event_line,
    mode_label,
    number,
    parse_time,
    patient_dose,
    patient_duration,
    patient_seconds_until,
    program_mode_text,
    rate_bench,
    rate_clinical,
    reservoir_contents,
    settings_rows,
    status_compression,
    view,
    when,
)
from rig.common.alarm_signals import SIGNALS, AlarmPriority

__all__ = [
    "DASH",
    "TRAINING_NOTICE",
    "BannerStyle",
    "active_alarms",
    "alarm_text",
    "banner_style",
    "banner_text",
    "battery_text",
    "compression",
    "countdown",
    "days",
    "event_line",
    "home_texts",
    "mode_label",
    "number",
    "parse_time",
    "patient_dose",
    "patient_duration",
    "patient_seconds_until",
    "reservoir_contents",
    "reservoir_fraction",
    "settings_rows",
    "status_compression",
    "view",
    "when",
]

PRIORITIES = {p.value for p in AlarmPriority}

# Screen colours for the catalogue's LED colour names: saturated, high contrast on black.
COLOUR_RGBA = {
    "red": (0.86, 0.0, 0.0, 1.0),
    "yellow": (1.0, 0.84, 0.0, 1.0),
    "cyan": (0.0, 0.8, 0.9, 1.0),
}
TEXT_ON_COLOUR = {"red": (1, 1, 1, 1), "yellow": (0, 0, 0, 1), "cyan": (0, 0, 0, 1)}


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
        "compression": status_compression(status),
        "contents": reservoir_contents(status),
        "patient_dose": patient_dose(status),
        "drug": str(program.get("drug") or DASH).capitalize(),
        "concentration": number(program.get("concentration_ug_per_ml"), 0, "µg/mL"),
        "mode": program_mode_text(status) if program else "No program",
        "dose": number(program.get("dose_ug_per_day", rates.get("dose_ug_per_day")), 1, "µg/day"),
        "rate_clinical": rate_clinical(rates),
        "rate_bench": rate_bench(rates),
        "reservoir": f"{number(volume, 2)} / {number(capacity, 0, 'mL')}",
        "to_low": f"{days(reservoir.get('hours_to_low'))} to low-reservoir alarm",
        "low_at": f"Low alarm {when(reservoir.get('low_alarm_at'))}",
        "empty_at": f"Empty {when(reservoir.get('empty_at'))}",
        "battery": battery_text(battery),
        "security": security_text(status),
    }


def security_text(status: dict[str, Any]) -> str:
    """The Home screen's warning while a role still has its factory PIN (else empty)."""
    factory = (status.get("security") or {}).get("factory_pins") or []
    if not factory:
        return ""
    return (
        f"Factory PIN in use: {', '.join(factory)}. Log in as that role and change it on the "
        "PIN screen (or: itbrig pin change --role ROLE)"
    )


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


def countdown(seconds: Any) -> str:
    """Seconds as ``m:ss``."""
    total = max(0, round(float(seconds or 0)))
    return f"{total // 60}:{total % 60:02d}"


ROTATIONS = (0, 90, 180, 270)


def kiosk_rotation(status: dict[str, Any]) -> int | None:
    """The rotation ``rig.toml``'s ``[kiosk]`` table asks for, from a status; None if absent."""
    kiosk = status.get("kiosk")
    rotation = kiosk.get("rotation") if isinstance(kiosk, dict) else None
    return rotation if rotation in ROTATIONS else None
