"""Clocks in patient time: real (×1), scaled (time compression ×N) and virtual (fast-forward).

All therapy runs in patient time. A scaled clock maps bench monotonic seconds to patient time:
at ×1440 one patient day passes per bench minute. Every status reports the clock's
``time_compression`` so nobody mistakes a demonstration for real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from rig.common.inputs import InputError


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


class ScaledClock:
    """Patient time runs *time_compression* times faster than the bench monotonic clock.

    ``patient_epoch`` is the patient time at bench monotonic second ``bench_epoch_s`` (now, when
    not given).
    """

    def __init__(
        self,
        time_compression: float,
        patient_epoch: datetime,
        bench_epoch_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= time_compression <= 100_000:
            raise InputError(
                f"time_compression: {time_compression!r} is outside the allowed 1 to 100000"
            )
        self._factor = float(time_compression)
        self._monotonic = monotonic
        self.patient_epoch = patient_epoch
        self.bench_epoch_s = monotonic() if bench_epoch_s is None else bench_epoch_s

    @property
    def time_compression(self) -> float:
        return self._factor

    def patient_at(self, bench_s: float) -> datetime:
        """Patient time at a bench monotonic instant."""
        return self.patient_epoch + timedelta(seconds=(bench_s - self.bench_epoch_s) * self._factor)

    def bench_at(self, patient_time: datetime) -> float:
        """Bench monotonic instant at which *patient_time* comes."""
        patient_s = (patient_time - self.patient_epoch).total_seconds()
        return self.bench_epoch_s + patient_s / self._factor

    def bench_seconds(self, patient_duration: timedelta) -> float:
        """Bench seconds that a patient duration takes."""
        return patient_duration.total_seconds() / self._factor

    def now(self) -> datetime:
        return self.patient_at(self._monotonic())


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
