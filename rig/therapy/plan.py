"""Delivery plan: a program (and boluses) as a piecewise-constant rate in patient time.

A plan starts at its ``origin`` (patient time). It is a lazily generated sequence of
:class:`Segment`\\ s — hours since the origin, volume rate and dose rate — so it can run for years
without building years of segments. Volumes are integrated exactly from the origin, and microstep
counts come from that absolute integral (``floor(volume / µL per step)``), so rounding never
accumulates however the steps are batched.

A program compiles to a :class:`Regimen`: one-shot phases first (priming bolus, bridge bolus,
single bolus: a volume at a rate), then an endless basal therapy that follows the clock (day
schedule by weekday, scheduled boluses at times of day). Patient boluses are overlays added on
top of the basal rate; they never change it.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from rig.therapy.programs import (
    BasalTherapy,
    BridgeBolusTherapy,
    FlexTherapy,
    PatientBolus,
    PeriodicBolusTherapy,
    PrimingBolusTherapy,
    Program,
    SingleBolusTherapy,
    StoppedTherapy,
)
from rig.therapy.units import (
    DAY,
    MINUTES_PER_HOUR,
    after_hours,
    ceil_after_hours,
    dose_rate_ug_per_h,
    dose_ug,
    hours,
    midnight,
    rate_ul_per_h,
    volume_ul,
    weekday_name,
)

# Search horizon for volumes that are never reached (20 years of patient time).
HORIZON_H = 20 * 365 * 24.0
# Tolerance when converting a volume to whole microsteps (guards float noise at exact multiples).
STEP_TOLERANCE = 1e-9
# Longest piece that equal neighbouring segments are joined into.
MAX_JOINED_H = 24.0
# Volumes this close above the reservoir cap count as the cap (float noise of the integral).
CAP_TOLERANCE_UL = 1e-6

PHASE_BASAL = "basal"
PHASE_STOPPED = "stopped"
PHASE_EMPTY = "empty"
PHASE_HALTED = "halted"
PHASE_END_OF_SERVICE = "end_of_service"
PHASE_PERIODIC_BOLUS = "periodic_bolus"
PHASE_PATIENT_BOLUS = "patient_bolus"


@dataclass(frozen=True, slots=True)
class Segment:
    """A constant rate from ``start_h`` to ``end_h`` (hours since the plan origin; inf = open)."""

    start_h: float
    end_h: float
    rate_ul_per_h: float
    dose_rate_ug_per_h: float
    phase: str

    def volume_ul(self, until_h: float) -> float:
        """Volume delivered from the segment start until *until_h* (within the segment)."""
        return self.rate_ul_per_h * (until_h - self.start_h) if self.rate_ul_per_h else 0.0

    def dose_ug(self, until_h: float) -> float:
        """Dose delivered from the segment start until *until_h* (within the segment)."""
        rate = self.dose_rate_ug_per_h
        return rate * (until_h - self.start_h) if rate else 0.0


@dataclass(frozen=True, slots=True)
class OneShot:
    """A finite delivery at the start of a program: a volume at a rate."""

    phase: str
    volume_ul: float
    rate_ul_per_h: float
    concentration_at_tip_ug_per_ml: float


@dataclass(frozen=True, slots=True)
class Overlay:
    """A bolus delivered on top of the basal rate (patient time, absolute)."""

    start: datetime
    end: datetime
    volume_ul: float
    dose_ug: float
    phase: str = PHASE_PATIENT_BOLUS


@dataclass(frozen=True)
class Regimen:
    """A program compiled for delivery: one-shot phases, then the endless basal therapy."""

    one_shots: tuple[OneShot, ...]
    basal: BasalTherapy
    concentration_ug_per_ml: float
    patient_bolus: PatientBolus | None

    @property
    def one_shot_volume_ul(self) -> float:
        return sum(shot.volume_ul for shot in self.one_shots)


STOPPED_THERAPY = StoppedTherapy(mode="stopped")
OverlaySource = Callable[[datetime], Iterator[Overlay]]


def compile_regimen(program: Program | None) -> Regimen:
    """Turn a program (None: never programmed, i.e. stopped) into its delivery regimen."""
    if program is None:
        return Regimen((), STOPPED_THERAPY, 1.0, None)
    conc = program.concentration_ug_per_ml
    root = program.root
    shots: list[OneShot] = []
    if isinstance(root, PrimingBolusTherapy):
        shots.append(OneShot("priming_bolus", root.catheter.volume_ul, root.rate_ul_per_h, 0.0))
    elif isinstance(root, BridgeBolusTherapy):
        old_conc = root.old_concentration_ug_per_ml
        bridge_rate = rate_ul_per_h(root.old_dose_ug_per_day, old_conc)
        shots.append(OneShot("bridge_bolus", root.catheter.volume_ul, bridge_rate, old_conc))
    main = program.main_therapy
    if isinstance(main, SingleBolusTherapy):
        bolus_ul = volume_ul(main.dose_ug, conc)
        shots.append(
            OneShot("single_bolus", bolus_ul, bolus_ul * MINUTES_PER_HOUR / main.duration_min, conc)
        )
        main = STOPPED_THERAPY
    return Regimen(tuple(shots), main, conc, program.patient_bolus)


def bolus_overlay(
    start: datetime,
    dose_ug_: float,
    duration_min: float,
    concentration_ug_per_ml: float,
    phase: str = PHASE_PATIENT_BOLUS,
) -> Overlay:
    """A bolus of *dose_ug_* over *duration_min* starting at *start*."""
    return Overlay(
        start,
        start + timedelta(minutes=duration_min),
        volume_ul(dose_ug_, concentration_ug_per_ml),
        dose_ug_,
        phase,
    )


def bench_steps_per_s(rate_ul_per_h_: float, ul_per_step: float, time_compression: float) -> float:
    """Bench microstep rate for a patient rate shown at a time-compression factor."""
    return rate_ul_per_h_ / 3600.0 * time_compression / ul_per_step


def steps_for_volume(volume_ul_: float, ul_per_step: float) -> int:
    """Whole microsteps completed once *volume_ul_* has been delivered."""
    return math.floor(volume_ul_ / ul_per_step + STEP_TOLERANCE)


class DeliveryPlan:
    """The rate of delivery over patient time from ``origin`` on, integrated exactly."""

    def __init__(
        self,
        origin: datetime,
        segments: Iterable[Segment],
        one_shot_remaining_ul: float = 0.0,
        volume_cap_ul: float | None = None,
    ) -> None:
        self.origin = origin
        self.one_shot_remaining_ul = one_shot_remaining_ul
        self.volume_cap_ul = volume_cap_ul
        self._source = iter(segments)
        self._segments: list[Segment] = []
        self._starts_h: list[float] = []
        self._cum_ul: list[float] = []
        self._cum_ug: list[float] = []
        self._complete = False

    # -- time conversion -------------------------------------------------------------------
    def hours_at(self, moment: datetime) -> float:
        """Hours since the origin (never negative: the plan does not look back)."""
        return max(0.0, hours(moment - self.origin))

    def time_at_h(self, hours_h: float) -> datetime:
        return after_hours(self.origin, hours_h)

    # -- lazy segment cache ----------------------------------------------------------------
    def _pull(self) -> bool:
        if self._complete:
            return False
        segment = next(self._source, None)
        if segment is None:
            self._complete = True
            return False
        if self._segments:
            last = self._segments[-1]
            cum_ul = self._cum_ul[-1] + last.volume_ul(last.end_h)
            cum_ug = self._cum_ug[-1] + last.dose_ug(last.end_h)
        else:
            cum_ul = cum_ug = 0.0
        self._segments.append(segment)
        self._starts_h.append(segment.start_h)
        self._cum_ul.append(cum_ul)
        self._cum_ug.append(cum_ug)
        if math.isinf(segment.end_h):
            self._complete = True
        return True

    def _index_h(self, at_h: float) -> int:
        while (not self._segments or self._segments[-1].end_h <= at_h) and self._pull():
            pass
        return max(0, bisect_right(self._starts_h, at_h) - 1)

    def segment_at(self, moment: datetime) -> Segment:
        """The segment in force at *moment*."""
        return self._segments[self._index_h(self.hours_at(moment))]

    def rate_ul_per_h(self, moment: datetime) -> float:
        """Volume rate in force at *moment*."""
        return self.segment_at(moment).rate_ul_per_h

    def next_change_after(self, moment: datetime) -> datetime | None:
        """When the rate next changes after *moment* (None: never)."""
        at_h = self.hours_at(moment)
        index = self._index_h(at_h)
        rate = self._segments[index].rate_ul_per_h
        while True:
            end_h = self._segments[index].end_h
            if math.isinf(end_h) or end_h > HORIZON_H:
                return None
            index = self._index_h(end_h)
            if self._segments[index].rate_ul_per_h != rate:
                return self.time_at_h(end_h)

    def segments_between(self, start: datetime, end: datetime) -> list[Segment]:
        """The segments overlapping [start, end), clipped to that interval."""
        at_h, end_h = self.hours_at(start), self.hours_at(end)
        result = []
        while at_h < end_h:
            segment = self._segments[self._index_h(at_h)]
            clipped_end = min(segment.end_h, end_h)
            result.append(
                Segment(
                    at_h,
                    clipped_end,
                    segment.rate_ul_per_h,
                    segment.dose_rate_ug_per_h,
                    segment.phase,
                )
            )
            at_h = clipped_end
        return result

    # -- integrals -------------------------------------------------------------------------
    def cumulative_volume_ul(self, moment: datetime) -> float:
        """Volume delivered from the origin until *moment*."""
        return self._cumulative_ul_h(self.hours_at(moment))

    def _cumulative_ul_h(self, at_h: float) -> float:
        index = self._index_h(at_h)
        return self._cum_ul[index] + self._segments[index].volume_ul(at_h)

    def cumulative_dose_ug(self, moment: datetime) -> float:
        """Dose reaching the patient from the origin until *moment*."""
        at_h = self.hours_at(moment)
        index = self._index_h(at_h)
        return self._cum_ug[index] + self._segments[index].dose_ug(at_h)

    def volume_ul(self, start: datetime, end: datetime) -> float:
        """Volume delivered between two instants."""
        return self.cumulative_volume_ul(end) - self.cumulative_volume_ul(start)

    def dose_ug(self, start: datetime, end: datetime) -> float:
        """Dose reaching the patient between two instants."""
        return self.cumulative_dose_ug(end) - self.cumulative_dose_ug(start)

    def hours_at_cumulative_ul(self, target_ul: float) -> float | None:
        """Earliest hours-since-origin at which the cumulative volume reaches *target_ul*."""
        if target_ul <= 0:
            return 0.0
        cap_ul = self.volume_cap_ul
        if cap_ul is not None and cap_ul < target_ul <= cap_ul + CAP_TOLERANCE_UL:
            target_ul = cap_ul
        self._index_h(0.0)
        while True:
            last = self._segments[-1]
            last_end_ul = self._cum_ul[-1] + last.volume_ul(last.end_h)
            if last_end_ul >= target_ul or math.isinf(last.end_h):
                break
            if last.end_h > HORIZON_H or not self._pull():
                return None
        index = bisect_left(self._cum_ul, target_ul) - 1
        segment = self._segments[index]
        if segment.rate_ul_per_h <= 0:
            # float noise can leave the integral a hair below a cap it reached exactly
            reached = target_ul - self._cum_ul[index] <= CAP_TOLERANCE_UL
            return segment.start_h if reached else None
        at_h = segment.start_h + (target_ul - self._cum_ul[index]) / segment.rate_ul_per_h
        return min(at_h, segment.end_h)

    def time_at_cumulative_ul(self, target_ul: float) -> datetime | None:
        """Earliest instant at which the cumulative volume reaches *target_ul* (None: never)."""
        at_h = self.hours_at_cumulative_ul(target_ul)
        return None if at_h is None else ceil_after_hours(self.origin, at_h)

    def end_of_delivery(self) -> datetime | None:
        """When delivery stops for good (one-shot program finished, empty, end of service)."""
        while self._pull():
            if self._segments[-1].end_h > HORIZON_H:
                break
        last = self._segments[-1]
        if math.isinf(last.end_h) and last.rate_ul_per_h == 0:
            return self.time_at_h(last.start_h)
        return None

    # -- microsteps ------------------------------------------------------------------------
    def cumulative_steps(self, moment: datetime, ul_per_step: float) -> int:
        """Whole microsteps due from the origin until *moment*."""
        return steps_for_volume(self.cumulative_volume_ul(moment), ul_per_step)

    def step_time(self, step_number: int, ul_per_step: float) -> datetime | None:
        """When microstep *step_number* (1-based, counted from the origin) is due."""
        return self.time_at_cumulative_ul((step_number - STEP_TOLERANCE) * ul_per_step)

    def step_times(self, start: datetime, end: datetime, ul_per_step: float) -> Iterator[datetime]:
        """Due times of every microstep in (start, end], each from the absolute integral."""
        first = self.cumulative_steps(start, ul_per_step) + 1
        last = self.cumulative_steps(end, ul_per_step)
        for step_number in range(first, last + 1):
            due = self.step_time(step_number, ul_per_step)
            if due is not None:
                yield due


def build_plan(
    regimen: Regimen,
    origin: datetime,
    *,
    one_shot_done_ul: float = 0.0,
    overlays: Iterable[Overlay] = (),
    extra_overlays: Iterable[OverlaySource] = (),
    stop_at: datetime | None = None,
    volume_cap_ul: float | None = None,
    halted: bool = False,
    scheduled_from: datetime | None = None,
) -> DeliveryPlan:
    """The delivery plan of a regimen from *origin*.

    *one_shot_done_ul* skips the part of the one-shot phases already delivered; *overlays* are
    patient boluses (absolute times); *extra_overlays* more sorted overlay streams (forecasts);
    *stop_at* ends delivery (end of service); *volume_cap_ul* ends it when the reservoir is empty;
    *scheduled_from* is when the basal phase began, if before *origin* (periodic boluses from then
    on count, including one in progress at the origin).
    """
    remaining = max(0.0, regimen.one_shot_volume_ul - one_shot_done_ul)
    if halted:
        return DeliveryPlan(origin, [Segment(0.0, math.inf, 0.0, 0.0, PHASE_HALTED)], remaining)
    segments = _one_shot_then_basal(
        regimen, origin, one_shot_done_ul, overlays, extra_overlays, scheduled_from
    )
    stop_h = math.inf if stop_at is None else hours(stop_at - origin)
    limited = _limited(_coalesced(segments), volume_cap_ul, stop_h)
    return DeliveryPlan(origin, limited, remaining, volume_cap_ul)


def _one_shot_then_basal(
    regimen: Regimen,
    origin: datetime,
    done_ul: float,
    overlays: Iterable[Overlay],
    extra_overlays: Iterable[OverlaySource],
    scheduled_from: datetime | None,
) -> Iterator[Segment]:
    at_h = 0.0
    for shot in regimen.one_shots:
        left_ul = shot.volume_ul - done_ul
        done_ul = max(0.0, -left_ul)
        if left_ul <= 0:
            continue
        end_h = at_h + left_ul / shot.rate_ul_per_h
        dose_rate = dose_ug(shot.rate_ul_per_h, shot.concentration_at_tip_ug_per_ml)
        yield Segment(at_h, end_h, shot.rate_ul_per_h, dose_rate, shot.phase)
        at_h = end_h
    basal_start = after_hours(origin, at_h)
    if at_h > 0 or scheduled_from is None:
        scheduled_from = basal_start
    streams: list[Iterator[Overlay]] = [
        iter(sorted((o for o in overlays if o.end > basal_start), key=lambda o: o.start)),
        _scheduled_boluses(regimen, scheduled_from, basal_start),
        *(source(basal_start) for source in extra_overlays),
    ]
    overlay_stream = heapq.merge(*streams, key=lambda o: o.start)
    yield from _merged(_basal_segments(regimen, origin, at_h), overlay_stream, origin, at_h)


def _basal_segments(regimen: Regimen, origin: datetime, start_h: float) -> Iterator[Segment]:
    therapy = regimen.basal
    conc = regimen.concentration_ug_per_ml
    if isinstance(therapy, StoppedTherapy):
        yield Segment(start_h, math.inf, 0.0, 0.0, PHASE_STOPPED)
        return
    if not isinstance(therapy, FlexTherapy):
        dose = therapy.day_schedule("mon")[0][1]
        yield Segment(
            start_h, math.inf, rate_ul_per_h(dose, conc), dose_rate_ug_per_h(dose), PHASE_BASAL
        )
        return
    day = midnight(after_hours(origin, start_h))
    while True:
        day_h = hours(day - origin)
        schedule = therapy.day_schedule(weekday_name(day))
        for index, (start_min, dose) in enumerate(schedule):
            end_min = schedule[index + 1][0] if index + 1 < len(schedule) else 1440
            seg_end_h = day_h + end_min / MINUTES_PER_HOUR
            if seg_end_h <= start_h:
                continue
            seg_start_h = max(start_h, day_h + start_min / MINUTES_PER_HOUR)
            yield Segment(
                seg_start_h,
                seg_end_h,
                rate_ul_per_h(dose, conc),
                dose_rate_ug_per_h(dose),
                PHASE_BASAL,
            )
        day += DAY


def _scheduled_boluses(
    regimen: Regimen, scheduled_from: datetime, basal_start: datetime
) -> Iterator[Overlay]:
    """Periodic boluses starting at or after *scheduled_from* that may still run at *basal_start*
    (a bolus lasts at most a day)."""
    therapy = regimen.basal
    if not isinstance(therapy, PeriodicBolusTherapy):
        return
    starts_min = therapy.bolus_starts_min()
    day = midnight(max(scheduled_from, basal_start - DAY))
    while True:
        for start_min in starts_min:
            start = day + timedelta(minutes=start_min)
            if start >= scheduled_from:
                yield bolus_overlay(
                    start,
                    therapy.bolus_dose_ug,
                    therapy.bolus_duration_min,
                    regimen.concentration_ug_per_ml,
                    PHASE_PERIODIC_BOLUS,
                )
        day += DAY


def _merged(
    basal: Iterator[Segment],
    overlays: Iterator[Overlay],
    origin: datetime,
    start_h: float,
) -> Iterator[Segment]:
    """Sweep the basal segments and the (sorted) overlays into summed constant-rate segments."""

    def overlay_hours(overlay: Overlay) -> tuple[float, float, float, float]:
        start_o, end_o = hours(overlay.start - origin), hours(overlay.end - origin)
        duration_h = end_o - start_o
        return start_o, end_o, overlay.volume_ul / duration_h, overlay.dose_ug / duration_h

    active: list[tuple[float, int, float, float, str]] = []
    pending = next(overlays, None)
    base = next(basal)
    at_h = start_h
    counter = 0
    while True:
        while active and active[0][0] <= at_h:
            heapq.heappop(active)
        while pending is not None and hours(pending.start - origin) <= at_h:
            _start, end_o, rate, dose_rate = overlay_hours(pending)
            if end_o > at_h:
                heapq.heappush(active, (end_o, counter, rate, dose_rate, pending.phase))
                counter += 1
            pending = next(overlays, None)
        while base.end_h <= at_h:
            base = next(basal)
        boundary = base.end_h
        if pending is not None:
            boundary = min(boundary, hours(pending.start - origin))
        if active:
            boundary = min(boundary, active[0][0])
        rate = base.rate_ul_per_h + sum(entry[2] for entry in active)
        dose_rate = base.dose_rate_ug_per_h + sum(entry[3] for entry in active)
        phase = active[0][4] if active else base.phase
        yield Segment(at_h, boundary, rate, dose_rate, phase)
        if math.isinf(boundary):
            return
        at_h = boundary


def _coalesced(segments: Iterator[Segment]) -> Iterator[Segment]:
    """Join neighbours with the same rates and phase (into pieces of at most a day, so that an
    endless run of equal steps still yields)."""
    current = next(segments)
    for segment in segments:
        if (
            segment.end_h - current.start_h <= MAX_JOINED_H
            and segment.rate_ul_per_h == current.rate_ul_per_h
            and segment.dose_rate_ug_per_h == current.dose_rate_ug_per_h
            and segment.phase == current.phase
        ):
            current = Segment(
                current.start_h,
                segment.end_h,
                current.rate_ul_per_h,
                current.dose_rate_ug_per_h,
                current.phase,
            )
            if math.isinf(segment.end_h):
                break
            continue
        yield current
        current = segment
    yield current


def _limited(segments: Iterator[Segment], cap_ul: float | None, stop_h: float) -> Iterator[Segment]:
    """Stop delivery once *cap_ul* has been delivered (empty) or at *stop_h* (end of service)."""
    delivered_ul = 0.0
    for segment in segments:
        if segment.start_h >= stop_h:
            yield Segment(segment.start_h, math.inf, 0.0, 0.0, PHASE_END_OF_SERVICE)
            return
        end_h = min(segment.end_h, stop_h)
        volume = segment.volume_ul(end_h)
        if cap_ul is not None and segment.rate_ul_per_h > 0 and delivered_ul + volume >= cap_ul:
            empty_h = segment.start_h + (cap_ul - delivered_ul) / segment.rate_ul_per_h
            if empty_h > segment.start_h:
                yield Segment(
                    segment.start_h,
                    empty_h,
                    segment.rate_ul_per_h,
                    segment.dose_rate_ug_per_h,
                    segment.phase,
                )
            yield Segment(max(empty_h, segment.start_h), math.inf, 0.0, 0.0, PHASE_EMPTY)
            return
        yield Segment(
            segment.start_h, end_h, segment.rate_ul_per_h, segment.dose_rate_ug_per_h, segment.phase
        )
        delivered_ul += volume
        if end_h < segment.end_h:
            yield Segment(end_h, math.inf, 0.0, 0.0, PHASE_END_OF_SERVICE)
            return
        if math.isinf(end_h):
            return
