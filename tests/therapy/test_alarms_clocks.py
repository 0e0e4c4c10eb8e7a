"""Alarm catalogue and patient-time clocks."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rig.common.inputs import InputError
from rig.therapy.alarms import (
    CATALOGUE,
    SIGNALS,
    AlarmCode,
    AlarmPriority,
    alarm_spec,
    highest_priority,
)
from rig.therapy.clocks import Clock, PacedClock, RealClock, VirtualClock

START = datetime(2025, 1, 6)


def test_catalogue_covers_every_code_with_text():
    assert set(CATALOGUE) == set(AlarmCode)
    for code, spec in CATALOGUE.items():
        assert spec.code is code
        assert spec.title and spec.meaning and spec.action
        assert spec.signal is SIGNALS[spec.priority]


@pytest.mark.parametrize(
    ("code", "priority", "stops"),
    [
        ("low_reservoir", "medium", False),
        ("empty_reservoir", "high", True),
        ("eri", "medium", False),
        ("end_of_service", "high", True),
        ("dose_limit", "low", False),
        ("motor_stall", "high", True),
        ("over_infusion", "high", True),
        ("runaway", "high", True),
        ("under_infusion", "medium", False),
        ("occlusion", "high", True),
        ("no_flow", "high", True),
        ("flow_while_stopped", "high", True),
        ("sensor_fault", "medium", False),
        ("air_in_line", "medium", False),
        ("power_loss_recovery", "high", True),
        ("watchdog", "high", True),
        ("emergency_stop", "high", True),
        ("refill_discrepancy", "medium", False),
        ("plunger_at_end", "high", True),
        ("limit_switch", "high", True),
        ("self_test_failed", "high", True),
        ("storage_failure", "high", True),
    ],
)
def test_priorities_and_delivery_stop(code, priority, stops):
    spec = alarm_spec(code)
    assert spec.priority == priority
    assert spec.stops_delivery is stops


def test_signals_follow_iec_60601_1_8():
    high, medium, low = (SIGNALS[p] for p in AlarmPriority)
    assert (high.burst_pulses_min, high.led_colour, high.flash_hz_min, high.flash_hz_max) == (
        10,
        "red",
        1.4,
        2.8,
    )
    assert (medium.burst_pulses_min, medium.led_colour, medium.flash_hz_min) == (3, "yellow", 0.4)
    assert medium.flash_hz_max == 0.8
    assert (low.burst_pulses_min, low.burst_pulses_max, low.led_colour) == (1, 2, "cyan")
    assert not low.flashing and high.flashing
    assert high.repeat_s_max == 15 and medium.repeat_s_max == 30


def test_highest_priority_wins():
    assert highest_priority([]) is None
    assert highest_priority(["dose_limit", "low_reservoir"]) is AlarmPriority.MEDIUM
    assert highest_priority(["eri", "motor_stall", "dose_limit"]) is AlarmPriority.HIGH
    with pytest.raises(ValueError):
        alarm_spec("no_such_alarm")


def test_paced_clock_maps_bench_seconds_to_patient_time():
    bench = [100.0]
    clock = PacedClock(1440, START, monotonic=lambda: bench[0])
    assert isinstance(clock, Clock)
    assert clock.now() == START
    bench[0] += 60.0  # one bench minute
    assert clock.now() == START + timedelta(days=1)
    assert clock.bench_at(START + timedelta(days=2)) == pytest.approx(220.0)
    assert clock.time_compression == clock.time_compression_nominal == 1440
    with pytest.raises(InputError, match="time_compression"):
        PacedClock(0.5, START)


def test_paced_clock_slows_where_the_bench_cannot_follow():
    """A 10-minute bolus at 300 µL/h inside 25 µL/h basal, bench limited to 2600 µL/min."""
    bolus_start, bolus_end = START + timedelta(hours=1), START + timedelta(hours=1, minutes=10)

    def rate_at(moment):
        if moment < bolus_start:
            return 25.0, bolus_start
        if moment < bolus_end:
            return 300.0, bolus_end
        return 25.0, None

    bench = [0.0]
    clock = PacedClock(
        1440, START, max_bench_ul_per_min=2600, rate_at=rate_at, monotonic=lambda: bench[0]
    )
    # Basal at x1440 is 600 µL/min on the bench: within the limit.
    assert clock.factor_at(START) == 1440
    # The bolus at x1440 would be 7200 µL/min: the clock slows to 2600 × 60 / 300 = x520.
    assert clock.factor_at(bolus_start) == pytest.approx(520)
    basal_bench_s = 3600 / 1440
    bolus_bench_s = 600 / 520
    assert clock.bench_at(bolus_start) == pytest.approx(basal_bench_s)
    assert clock.bench_at(bolus_end) == pytest.approx(basal_bench_s + bolus_bench_s)
    bench[0] = basal_bench_s + bolus_bench_s / 2
    assert (clock.now() - bolus_start).total_seconds() == pytest.approx(300, abs=1e-3)
    assert clock.time_compression == pytest.approx(520)
    bench[0] = basal_bench_s + bolus_bench_s + 1.0  # one bench second after the bolus
    assert (clock.now() - bolus_end).total_seconds() == pytest.approx(1440, abs=1e-3)
    clock.set_time_compression(60)
    bench[0] += 1.0
    assert (clock.now() - bolus_end).total_seconds() == pytest.approx(1500, abs=1e-3)
    assert clock.time_compression_nominal == 60


def test_virtual_and_real_clocks():
    clock = VirtualClock(START, time_compression=60)
    assert clock.advance(timedelta(hours=2)) == START + timedelta(hours=2)
    clock.set(START + timedelta(days=1))
    assert clock.now() == START + timedelta(days=1)
    with pytest.raises(InputError):
        clock.set(START)
    assert clock.time_compression == 60
    real = RealClock()
    assert real.time_compression == 1
    assert abs(real.now() - datetime.now()) < timedelta(seconds=5)
