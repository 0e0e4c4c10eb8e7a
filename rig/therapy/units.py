"""Dose and time units: µg/day ↔ mL/day ↔ µL/h through the concentration; patient clock time.

Every therapy quantity carries its unit in its name. Patient time is a naive :class:`datetime` in
the patient's local time (no daylight-saving jumps); durations in hours are plain floats.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

UL_PER_ML = 1000.0
HOURS_PER_DAY = 24.0
MINUTES_PER_HOUR = 60.0
SECONDS_PER_MINUTE = 60.0
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def ml_per_day(dose_ug_per_day: float, concentration_ug_per_ml: float) -> float:
    """Volume rate (mL/day) that delivers a daily dose at a concentration."""
    return dose_ug_per_day / concentration_ug_per_ml


def ul_per_h_from_ml_per_day(rate_ml_per_day: float) -> float:
    """mL/day → µL/h."""
    return rate_ml_per_day * UL_PER_ML / HOURS_PER_DAY


def ml_per_day_from_ul_per_h(rate_ul_per_h: float) -> float:
    """µL/h → mL/day."""
    return rate_ul_per_h * HOURS_PER_DAY / UL_PER_ML


def rate_ul_per_h(dose_ug_per_day: float, concentration_ug_per_ml: float) -> float:
    """Volume rate (µL/h) that delivers a daily dose at a concentration."""
    return ul_per_h_from_ml_per_day(ml_per_day(dose_ug_per_day, concentration_ug_per_ml))


def dose_ug_per_day(rate_ul_per_h_: float, concentration_ug_per_ml: float) -> float:
    """Daily dose (µg/day) delivered by a volume rate (µL/h) at a concentration."""
    return ml_per_day_from_ul_per_h(rate_ul_per_h_) * concentration_ug_per_ml


def dose_rate_ug_per_h(dose_ug_per_day_: float) -> float:
    """A daily dose expressed per hour."""
    return dose_ug_per_day_ / HOURS_PER_DAY


def volume_ul(dose_ug: float, concentration_ug_per_ml: float) -> float:
    """Volume (µL) holding a dose at a concentration."""
    return dose_ug / concentration_ug_per_ml * UL_PER_ML


def dose_ug(volume_ul_: float, concentration_ug_per_ml: float) -> float:
    """Dose (µg) held in a volume at a concentration."""
    return volume_ul_ / UL_PER_ML * concentration_ug_per_ml


def ul_per_min(steps_per_s: float, ul_per_step: float) -> float:
    """Bench flow of a step rate."""
    return steps_per_s * ul_per_step * SECONDS_PER_MINUTE


def hours(delta: timedelta) -> float:
    """A duration in hours."""
    return delta / HOUR


def after_hours(start: datetime, duration_h: float) -> datetime:
    """The instant *duration_h* hours after *start* (rounded to the microsecond)."""
    return start + timedelta(hours=duration_h)


def ceil_after_hours(start: datetime, duration_h: float) -> datetime:
    """The first whole microsecond at or after *duration_h* hours past *start*."""
    return start + timedelta(microseconds=math.ceil(duration_h * 3_600_000_000))


def midnight(moment: datetime) -> datetime:
    """The start of the patient day containing *moment*."""
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def floor_to_minute(moment: datetime) -> datetime:
    """*moment* with seconds dropped: calendar alarm dates are shown to the minute."""
    return moment.replace(second=0, microsecond=0)


def weekday_name(moment: datetime) -> str:
    """``"mon"`` … ``"sun"``."""
    return WEEKDAYS[moment.weekday()]
