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
from rig.therapy.clocks import Clock, RealClock, ScaledClock, VirtualClock

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


def test_scaled_clock_maps_bench_seconds_to_patient_time():
    bench = [100.0]
    clock = ScaledClock(1440, START, monotonic=lambda: bench[0])
    assert isinstance(clock, Clock)
    assert clock.now() == START
    bench[0] += 60.0  # one bench minute
    assert clock.now() == START + timedelta(days=1)
    assert clock.patient_at(100.0 + 30) == START + timedelta(hours=12)
    assert clock.bench_at(START + timedelta(days=2)) == pytest.approx(220.0)
    assert clock.bench_seconds(timedelta(hours=1)) == pytest.approx(2.5)
    assert clock.time_compression == 1440
    with pytest.raises(InputError, match="time_compression"):
        ScaledClock(0.5, START)


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
