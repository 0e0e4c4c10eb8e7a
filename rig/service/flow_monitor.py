"""Flow monitor: does the fluid go where the motor says it goes?

The monitor compares the flow implied by the steps issued with the flow the sensor measures,
averaged over a sliding window, and reports which flow conditions hold now:

* ``over_infusion`` — measured above expected by more than 10 % over the window;
* ``runaway`` — measured at least twice the expected flow (far above the program);
* ``under_infusion`` — measured below expected by more than 10 % (partial occlusion, leak,
  slipping drive);
* ``no_flow`` — (almost) nothing measured while the motor runs (stall or blocked line);
* ``flow_while_stopped`` — flow measured while no step has been issued (leak or free flow);
* ``sensor_fault`` — the sensor is silent, returns errors or reads out of range;
* ``air_in_line`` — the sensor flags air.

Windows are defined in patient time (15 patient minutes by default, as the FDA guidance's
sustained deviation) and scaled to bench time by the time-compression factor, but never shorter
than the line physics allows: fluid does not compress with the clock, so the line's time constant
sets a floor in bench seconds. After every rate change the monitor waits for the line to settle
before judging, so a flex step or a bolus never false-alarms.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

from hal.flow_sensor import SLF3S_0600F_FULL_SCALE_UL_PER_MIN
from rig.therapy.alarms import AlarmCode, alarm_spec
from rig.therapy.units import SECONDS_PER_MINUTE

OVER_INFUSION = AlarmCode.OVER_INFUSION
RUNAWAY = AlarmCode.RUNAWAY
UNDER_INFUSION = AlarmCode.UNDER_INFUSION
NO_FLOW = AlarmCode.NO_FLOW
FLOW_WHILE_STOPPED = AlarmCode.FLOW_WHILE_STOPPED
SENSOR_FAULT = AlarmCode.SENSOR_FAULT
AIR_IN_LINE = AlarmCode.AIR_IN_LINE
FLOW_CONDITIONS = (
    OVER_INFUSION,
    RUNAWAY,
    UNDER_INFUSION,
    NO_FLOW,
    FLOW_WHILE_STOPPED,
    SENSOR_FAULT,
    AIR_IN_LINE,
)
"""Every condition the monitor reports: each is the alarm code it raises."""
RUNNING_CONDITIONS = frozenset({OVER_INFUSION, RUNAWAY, UNDER_INFUSION, NO_FLOW})
"""Conditions only a window with the motor running can judge: a stopped motor neither shows
nor disproves them (a kinked line looks the same as a clear one when nothing is pushed)."""


@dataclass(frozen=True)
class FlowLimits:
    """Thresholds and windows of the flow monitor."""

    window_patient_min: float = 15.0
    """Sustained-deviation window in patient minutes."""
    min_window_bench_s: float = 4.0
    """Shortest window in bench seconds (several line time constants)."""
    settle_bench_s: float = 2.0
    """Time after a rate change before the line is judged (line and sensor lag)."""
    over_fraction: float = 0.10
    under_fraction: float = 0.10
    runaway_factor: float = 2.0
    runaway_window_fraction: float = 0.25
    """A runaway is judged on this last part of the window, so it is caught before over-infusion."""
    no_flow_fraction: float = 0.05
    stopped_flow_ul_per_min: float = 2.0
    """Mean flow that counts as flowing while the motor is stopped."""
    sensor_silent_bench_s: float = 1.0
    """Consecutive time without a valid reading that makes a sensor fault."""
    sensor_range_ul_per_min: float = SLF3S_0600F_FULL_SCALE_UL_PER_MIN
    """Full scale of the flow sensor; readings beyond it are out of range."""

    def window_bench_s(self, time_compression: float) -> float:
        patient_s = self.window_patient_min * SECONDS_PER_MINUTE
        return max(patient_s / time_compression, self.min_window_bench_s)


@dataclass(frozen=True)
class FlowStatus:
    """What the monitor concluded at one instant."""

    conditions: frozenset[str]
    expected_ul_per_min: float | None
    measured_ul_per_min: float | None
    window_bench_s: float
    time_compression: float = 1.0
    """Patient seconds per bench second while the window ran."""
    judged: frozenset[str] = frozenset(FLOW_CONDITIONS)
    """The conditions this instant could judge: present or gone. The others are unknown (the
    window is settling or not full, the sensor is silent, or the motor is stopped) and keep
    what was last judged."""


@dataclass
class _Sample:
    at_s: float
    steps: int
    flow_ul_per_min: float


class FlowMonitor:
    """Sliding-window comparison of step-implied and measured flow (bench time in seconds)."""

    def __init__(
        self, ul_per_step: float, time_compression: float, limits: FlowLimits | None = None
    ) -> None:
        if not math.isfinite(ul_per_step) or ul_per_step <= 0:
            raise ValueError(f"ul_per_step must be > 0, not {ul_per_step!r}")
        self.ul_per_step = ul_per_step
        self.limits = limits or FlowLimits()
        self.time_compression = time_compression
        self._samples: deque[_Sample] = deque()
        self._flow_sum = 0.0
        self._rate_ul_per_min = 0.0
        self._settled_from_s = 0.0
        self._last_valid_s: float | None = None
        self._last_error: str | None = None
        self._air = False
        self._out_of_range = False
        self._deviation_since: dict[str, float] = {}

    @property
    def window_bench_s(self) -> float:
        return self.limits.window_bench_s(self.time_compression)

    def set_time_compression(self, time_compression: float, now_s: float) -> None:
        self.time_compression = time_compression
        self._restart(now_s)

    def set_rate(self, rate_ul_per_min: float, now_s: float) -> None:
        """The commanded rate changed at *now_s* (bench time): restart the window after settling."""
        if rate_ul_per_min != self._rate_ul_per_min:
            self._rate_ul_per_min = rate_ul_per_min
            self._restart(now_s)

    def restart(self, now_s: float) -> None:
        """Forget the window: steps issued meanwhile did not go through the line (a refill)."""
        self._restart(now_s)

    def _restart(self, now_s: float) -> None:
        self._settled_from_s = now_s + self.limits.settle_bench_s
        self._samples.clear()
        self._flow_sum = 0.0
        self._deviation_since.clear()

    def observe_error(self, now_s: float, error: str) -> FlowStatus:
        """A read failed (timeout, absent, bad data): judged as silent once it lasts."""
        self._last_error = error
        if self._last_valid_s is None:
            self._last_valid_s = now_s
        return self.status(now_s)

    def observe(
        self, now_s: float, steps_issued: int, flow_ul_per_min: float, air_in_line: bool = False
    ) -> FlowStatus:
        """A valid reading at *now_s* with the step count issued by then."""
        self._last_valid_s = now_s
        self._last_error = None
        self._air = air_in_line
        self._out_of_range = abs(flow_ul_per_min) > self.limits.sensor_range_ul_per_min
        if now_s >= self._settled_from_s and not air_in_line:
            sample = _Sample(now_s, steps_issued, flow_ul_per_min)
            self._samples.append(sample)
            self._flow_sum += flow_ul_per_min
            window_start_s = now_s - self.window_bench_s
            while len(self._samples) > 2 and self._samples[1].at_s <= window_start_s:
                self._flow_sum -= self._samples.popleft().flow_ul_per_min
        return self.status(now_s)

    def status(self, now_s: float) -> FlowStatus:
        conditions: set[str] = set()
        limits = self.limits
        silent = (
            self._last_error is not None
            and self._last_valid_s is not None
            and now_s - self._last_valid_s >= limits.sensor_silent_bench_s
        )
        if silent or self._out_of_range:
            conditions.add(SENSOR_FAULT)
        if self._air:
            conditions.add(AIR_IN_LINE)
        judged = {SENSOR_FAULT, AIR_IN_LINE}
        expected = measured = None
        samples = self._samples
        if not silent and len(samples) >= 2:
            span_s = samples[-1].at_s - samples[0].at_s
            short = self._recent_runaway(samples, span_s)
            if short:
                conditions.add(RUNAWAY)
                judged.add(RUNAWAY)
            elif span_s >= self.window_bench_s * 0.95:
                steps = samples[-1].steps - samples[0].steps
                expected = steps * self.ul_per_step / (span_s / SECONDS_PER_MINUTE)
                measured = self._flow_sum / len(samples)
                conditions |= self._sustained(self._judge(expected, measured), now_s)
                judged.add(FLOW_WHILE_STOPPED)
                if self._rate_ul_per_min > 0 or expected > 0:
                    judged |= RUNNING_CONDITIONS
        return FlowStatus(
            frozenset(conditions),
            expected,
            measured,
            self.window_bench_s,
            self.time_compression,
            frozenset(judged | conditions),
        )

    def _sustained(self, judged: set[str], now_s: float) -> set[str]:
        """Over- and under-infusion count once they have held for the runaway window.

        A runaway passes +10 % on its way to ×2; holding over-infusion back briefly lets the
        faster runaway judgement name it correctly.
        """
        hold_s = self.window_bench_s * self.limits.runaway_window_fraction
        kept = set()
        for condition in judged:
            if condition in (OVER_INFUSION, UNDER_INFUSION):
                since = self._deviation_since.setdefault(condition, now_s)
                if now_s - since < hold_s:
                    continue
            kept.add(condition)
        for condition in list(self._deviation_since):
            if condition not in judged:
                del self._deviation_since[condition]
        return kept

    def _recent_runaway(self, samples: deque[_Sample], span_s: float) -> bool:
        """Flow far above the steps over the latest part of the window (judged early)."""
        short_s = self.window_bench_s * self.limits.runaway_window_fraction
        if span_s < short_s:
            return False
        start_s = samples[-1].at_s - short_s
        recent = list(itertools.takewhile(lambda sample: sample.at_s >= start_s, reversed(samples)))
        first, last = recent[-1], recent[0]
        if last.at_s <= first.at_s:
            return False
        steps = last.steps - first.steps
        expected = steps * self.ul_per_step / ((last.at_s - first.at_s) / SECONDS_PER_MINUTE)
        measured = sum(sample.flow_ul_per_min for sample in recent) / len(recent)
        return expected > 0 and measured >= expected * self.limits.runaway_factor

    def _judge(self, expected: float, measured: float) -> set[str]:
        limits = self.limits
        if self._rate_ul_per_min <= 0 and expected <= 0:
            return {FLOW_WHILE_STOPPED} if measured > limits.stopped_flow_ul_per_min else set()
        if expected <= 0:
            return set()
        if measured >= expected * limits.runaway_factor:
            return {RUNAWAY}
        if measured > expected * (1 + limits.over_fraction):
            return {OVER_INFUSION}
        if measured < expected * limits.no_flow_fraction:
            return {NO_FLOW}
        if measured < expected * (1 - limits.under_fraction):
            return {UNDER_INFUSION}
        return set()


def flow_alarm_texts(code: str, status: FlowStatus) -> tuple[str, str]:
    """(clinical message, bench detail) of a flow condition: the message in the patient's units
    (µL/h, patient minutes), the detail as the bench measured it (µL/min, bench seconds)."""
    expected, measured = status.expected_ul_per_min, status.measured_ul_per_min
    if expected is None or measured is None:
        return alarm_spec(code).meaning, ""
    factor = status.time_compression
    to_patient_ul_per_h = SECONDS_PER_MINUTE / factor
    window_patient_min = status.window_bench_s * factor / SECONDS_PER_MINUTE
    share = f" ({100 * measured / expected:.0f} %)" if expected > 0 else ""
    message = (
        f"measured {measured * to_patient_ul_per_h:.1f} µL/h against "
        f"{expected * to_patient_ul_per_h:.1f} µL/h expected{share} "
        f"over {_patient_span(window_patient_min)} of patient time"
    )
    detail = (
        f"bench: measured {measured:.1f} µL/min against {expected:.1f} µL/min expected "
        f"over {status.window_bench_s:.1f} bench s (time ×{factor:g})"
    )
    return message, detail


def _patient_span(minutes: float) -> str:
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest:02d} min" if hours else f"{rest} min"
