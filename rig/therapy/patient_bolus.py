"""Patient-activated bolus rules: lockout, maximum per rolling 24 h, daily dose limit.

A request at time *t* counts the granted boluses that started in (t − 24 h, t]. The same rules
decide single requests (:func:`window_refusal`) and generate the worst case in which every
allowed bolus is taken (:func:`greedy_bolus_times`), used by the refill forecast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from rig.therapy.programs import PatientBolus
from rig.therapy.units import DAY


class BolusRefusal(StrEnum):
    """Why a patient bolus request was refused."""

    NOT_AVAILABLE = "not_available"
    ALARM_ACTIVE = "alarm_active"
    LOCKOUT = "lockout"
    MAX_PER_24H = "max_per_24h"
    DOSE_LIMIT = "dose_limit"
    INSUFFICIENT_VOLUME = "insufficient_volume"


def allowed_per_24h(block: PatientBolus, daily_total_ug: float, daily_hard_limit_ug: float) -> int:
    """Boluses allowed per rolling 24 h: the programmed maximum, or fewer if the daily hard
    limit (programmed daily total plus patient boluses) would be passed."""
    headroom_ug = daily_hard_limit_ug - daily_total_ug
    by_limit = math.floor(headroom_ug / block.dose_ug + 1e-9) if headroom_ug > 0 else 0
    return max(0, min(block.max_per_24h, by_limit))


def starts_in_window(starts: Sequence[datetime], now: datetime) -> list[datetime]:
    """Bolus starts that count at *now*: those in (now − 24 h, now]."""
    return sorted(start for start in starts if now - DAY < start <= now)


def window_refusal(
    block: PatientBolus, starts: Sequence[datetime], now: datetime, allowed: int
) -> BolusRefusal | None:
    """Lockout, rolling-24 h maximum and dose-limit rule for a request at *now*."""
    if starts and now - max(starts) < timedelta(minutes=block.lockout_min):
        return BolusRefusal.LOCKOUT
    count = len(starts_in_window(starts, now))
    if count >= block.max_per_24h:
        return BolusRefusal.MAX_PER_24H
    if count >= allowed:
        return BolusRefusal.DOSE_LIMIT
    return None


def earliest_allowed(
    block: PatientBolus, starts: Sequence[datetime], after: datetime, allowed: int
) -> datetime | None:
    """The first instant at or after *after* at which the window rules allow a bolus."""
    if allowed <= 0:
        return None
    moment = after
    if starts:
        moment = max(moment, max(starts) + timedelta(minutes=block.lockout_min))
    recent = starts_in_window(starts, moment)
    if len(recent) >= allowed:
        moment = max(moment, recent[len(recent) - allowed] + DAY)
    return moment


def greedy_bolus_times(
    block: PatientBolus, starts: Sequence[datetime], after: datetime, allowed: int
) -> Iterator[datetime]:
    """Every bolus the rules allow from *after* on, each taken as soon as allowed."""
    history = sorted(starts)[-max(allowed, 1) :]
    moment = after
    while True:
        next_time = earliest_allowed(block, history, moment, allowed)
        if next_time is None:
            return
        yield next_time
        history = [*history[-(allowed - 1) :], next_time] if allowed > 1 else [next_time]
        moment = next_time
