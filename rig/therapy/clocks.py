"""Clocks in patient time: real (×1), paced (time compression ×N within the bench's limits) and
virtual (fast-forward).

All therapy runs in patient time. A paced clock maps bench monotonic seconds to patient time: at
×1440 one patient day passes per bench minute, slower wherever the bench could not follow the
delivery rate at that factor. Every status reports the nominal and the effective factor so that
nobody mistakes a demonstration for real time.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from rig.common.inputs import InputError
from rig.therapy.units import MINUTES_PER_HOUR


@runtime_checkable
class Clock(Protocol):
    """A source of patient time."""

    @property
    def time_compression(self) -> float:
        """Patient seconds per bench second."""
        ...

    def now(self) -> datetime:
        """The current patient time."""
        ...


class RealClock:
    """Patient time is local wall-clock time (×1)."""

    time_compression = 1.0

    def now(self) -> datetime:
        return datetime.now()


RateAt = Callable[[datetime], tuple[float, datetime | None]]
"""The delivery rate (µL/h) in force at a patient moment, and when it next changes (None: never)."""


def _constant_rate(_moment: datetime) -> tuple[float, datetime | None]:
    return 0.0, None


class PacedClock:
    """Patient time at the nominal time compression, slowed wherever the bench could not follow.

    A patient rate *r* (µL/h) runs on the bench at ``r × factor / 60`` µL/min. The effective
    factor at each moment is the largest one at or below the nominal at which that stays within
    ``max_bench_ul_per_min`` (drive, flow sensor and configured limits): a patient bolus or a
    priming bolus slows the patient clock, which speeds up again after it. Patient-time figures
    stay exact because the whole rig reads this one clock.

    The delivery rate comes from *rate_at* (the delivery plan in force). The clock re-anchors on
    every :meth:`now`; whoever changes the plan must read :meth:`now` first (the therapy engine
    does, on every state change), so each stretch of bench time is paced by the plan that was in
    force during it.
    """

    def __init__(
        self,
        time_compression: float,
        patient_epoch: datetime,
        *,
        max_bench_ul_per_min: float = math.inf,
        rate_at: RateAt = _constant_rate,
        bench_epoch_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= time_compression <= 100_000:
            raise InputError(
                f"time_compression: {time_compression!r} is outside the allowed 1 to 100000"
            )
        if not max_bench_ul_per_min > 0:
            raise ValueError(f"max_bench_ul_per_min must be > 0, not {max_bench_ul_per_min!r}")
        self._nominal = float(time_compression)
        self.max_bench_ul_per_min = max_bench_ul_per_min
        self.rate_at = rate_at
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor_patient = patient_epoch
        self._anchor_bench_s = monotonic() if bench_epoch_s is None else bench_epoch_s

    @property
    def time_compression_nominal(self) -> float:
        """The factor the trainer set."""
        return self._nominal

    @property
    def time_compression(self) -> float:
        """The factor in force now (patient seconds per bench second)."""
        return self.factor_at(self.now())

    def factor_at(self, moment: datetime) -> float:
        """The effective factor at a patient moment under the current plan."""
        return self._factor_and_change(moment)[0]

    def limit_factor(self, rate_ul_per_h: float) -> float:
        """The largest factor at which *rate_ul_per_h* stays within the bench's flow limit."""
        if rate_ul_per_h <= 0:
            return math.inf
        return self.max_bench_ul_per_min * MINUTES_PER_HOUR / rate_ul_per_h

    def _factor_and_change(self, moment: datetime) -> tuple[float, datetime | None]:
        rate_ul_per_h, change = self.rate_at(moment)
        return min(self._nominal, self.limit_factor(rate_ul_per_h)), change

    def now(self) -> datetime:
        bench_s = self._monotonic()
        with self._lock:
            moment = self._anchor_patient
            remaining_s = bench_s - self._anchor_bench_s
            while remaining_s > 0:
                factor, change = self._factor_and_change(moment)
                if change is not None and change > moment:
                    needed_s = (change - moment).total_seconds() / factor
                    if needed_s < remaining_s:
                        moment, remaining_s = change, remaining_s - needed_s
                        continue
                moment += timedelta(seconds=remaining_s * factor)
                break
            if bench_s > self._anchor_bench_s:
                self._anchor_patient, self._anchor_bench_s = moment, bench_s
            return moment

    def bench_at(self, patient_time: datetime) -> float:
        """The bench instant at which *patient_time* comes, under the current plan."""
        with self._lock:
            moment, bench_s = self._anchor_patient, self._anchor_bench_s
        if patient_time <= moment:
            factor = self.factor_at(moment)
            return bench_s - (moment - patient_time).total_seconds() / factor
        while moment < patient_time:
            factor, change = self._factor_and_change(moment)
            end = patient_time if change is None or change <= moment else min(change, patient_time)
            bench_s += (end - moment).total_seconds() / factor
            moment = end
        return bench_s

    def set_time_compression(self, time_compression: float) -> None:
        """A new nominal factor from now on (patient time keeps its place)."""
        if not 1 <= time_compression <= 100_000:
            raise InputError(
                f"time_compression: {time_compression!r} is outside the allowed 1 to 100000"
            )
        self.now()
        self._nominal = float(time_compression)


class VirtualClock:
    """Patient time that moves only when told to (tests, simulation, fast-forward).

    *time_compression* is the nominal factor reported in statuses.
    """

    def __init__(self, start: datetime, time_compression: float = 1.0) -> None:
        self._now = start
        self._factor = float(time_compression)

    @property
    def time_compression(self) -> float:
        return self._factor

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump forward to *moment*; patient time never runs backwards."""
        if moment < self._now:
            raise InputError(f"time: {moment.isoformat()} is before the clock ({self._now})")
        self._now = moment

    def advance(self, duration: timedelta) -> datetime:
        """Move forward by *duration*; returns the new time."""
        self.set(self._now + duration)
        return self._now
