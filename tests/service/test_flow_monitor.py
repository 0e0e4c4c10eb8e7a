"""Flow monitor: windows scaled from patient time, each condition, no false alarm on noise."""

from __future__ import annotations

import random

import pytest

from rig.service.flow_monitor import (
    AIR_IN_LINE,
    FLOW_WHILE_STOPPED,
    NO_FLOW,
    OVER_INFUSION,
    RUNAWAY,
    SENSOR_FAULT,
    UNDER_INFUSION,
    FlowLimits,
    FlowMonitor,
)

UL_PER_STEP = 0.0204424
SAMPLE_S = 0.1


def feed(
    monitor,
    *,
    seconds,
    rate_ul_per_min,
    measured_factor=1.0,
    noise=0.3,
    start_s=0.0,
    seed=1,
    air=False,
):
    """Run the monitor for *seconds* with steps at *rate* and a sensor reading factor × flow."""
    rng = random.Random(seed)
    monitor.set_rate(rate_ul_per_min, start_s)
    steps_per_s = rate_ul_per_min / 60 / UL_PER_STEP
    status = None
    for index in range(int(seconds / SAMPLE_S) + 1):
        now_s = start_s + index * SAMPLE_S
        steps = int(steps_per_s * now_s)
        measured = rate_ul_per_min * measured_factor + rng.gauss(0, noise)
        status = monitor.observe(now_s, steps, measured, air)
    return status


def test_window_is_patient_time_scaled_with_a_physics_floor():
    limits = FlowLimits()
    assert limits.window_bench_s(1.0) == 900.0
    assert limits.window_bench_s(60.0) == 15.0
    assert limits.window_bench_s(1440.0) == limits.min_window_bench_s


@pytest.mark.parametrize("compression", [1.0, 60.0, 1440.0])
def test_nominal_flow_with_noise_raises_nothing(compression):
    monitor = FlowMonitor(UL_PER_STEP, compression)
    rate = 0.6 * 1000 / 1440 * compression  # 300 µg/day at 500 µg/mL, compressed
    window = monitor.window_bench_s
    for seed in range(3):
        status = feed(monitor, seconds=3 * window, rate_ul_per_min=rate, seed=seed)
        assert status.expected_ul_per_min == pytest.approx(rate, rel=0.05)
        assert status.conditions == frozenset()


@pytest.mark.parametrize(
    ("factor", "condition"),
    [(1.2, OVER_INFUSION), (2.5, RUNAWAY), (0.7, UNDER_INFUSION), (0.0, NO_FLOW)],
)
def test_each_deviation_is_reported(factor, condition):
    monitor = FlowMonitor(UL_PER_STEP, 1440.0)
    status = feed(monitor, seconds=10, rate_ul_per_min=600.0, measured_factor=factor)
    assert status.conditions == {condition}


def test_no_judgement_before_the_line_settles_and_a_window_fills():
    monitor = FlowMonitor(UL_PER_STEP, 1440.0)
    status = feed(monitor, seconds=3.0, rate_ul_per_min=600.0, measured_factor=0.0)
    assert status.conditions == frozenset()
    assert status.measured_ul_per_min is None


def test_flow_while_stopped():
    monitor = FlowMonitor(UL_PER_STEP, 1440.0)
    status = feed(monitor, seconds=10, rate_ul_per_min=0.0, measured_factor=1.0)
    assert status.conditions == frozenset()
    monitor.set_rate(0.0, 10.0)
    for index in range(100):
        now_s = 10.0 + index * SAMPLE_S
        status = monitor.observe(now_s, 0, 25.0)
    assert status.conditions == {FLOW_WHILE_STOPPED}


def test_silent_sensor_becomes_a_fault_after_its_grace_time():
    monitor = FlowMonitor(UL_PER_STEP, 1440.0)
    feed(monitor, seconds=8, rate_ul_per_min=600.0)
    status = monitor.observe_error(8.1, "timeout")
    assert SENSOR_FAULT not in status.conditions
    status = monitor.observe_error(9.2, "timeout")
    assert SENSOR_FAULT in status.conditions
    assert status.measured_ul_per_min is None


def test_out_of_range_and_air_flags():
    monitor = FlowMonitor(UL_PER_STEP, 1440.0)
    assert SENSOR_FAULT in monitor.observe(0.0, 0, 5000.0).conditions
    assert monitor.observe(0.1, 0, 10.0, air_in_line=True).conditions == {AIR_IN_LINE}
