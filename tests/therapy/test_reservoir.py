"""Reservoir forecasts, battery life and the refill discrepancy rule."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rig.common.inputs import InputError
from rig.therapy.drugs import parse_program
from rig.therapy.plan import build_plan, compile_regimen
from rig.therapy.reservoir import (
    BatteryState,
    ReservoirState,
    battery_status,
    forecast_reservoir,
    refill_verdict,
)

START = datetime(2025, 1, 6)


def _continuous(dose, concentration=500):
    return parse_program(
        {"mode": "continuous", "concentration_ug_per_ml": concentration, "dose_ug_per_day": dose}
    )


def test_worked_example_20_ml_at_0_6_ml_per_day():
    reservoir = ReservoirState(capacity_ml=20, volume_ml=20, low_threshold_ml=2)
    plan = build_plan(compile_regimen(_continuous(300)), START, volume_cap_ul=20_000)
    forecast = forecast_reservoir(plan, START, reservoir)
    assert forecast.hours_to_empty / 24 == pytest.approx(33.333, abs=1e-3)
    assert forecast.hours_to_low / 24 == pytest.approx(30.0)
    assert forecast.low_alarm_at == datetime(2025, 2, 5)
    assert forecast.empty_at == datetime(2025, 2, 8, 8, 0)


def test_forecast_from_a_later_instant_and_minute_rounding():
    # 0.15 mL/day: 10 mL to low takes 66.666.. days = 66 d 16 h 0 min
    plan = build_plan(compile_regimen(_continuous(300, 2000)), START, volume_cap_ul=12_000)
    later = START + timedelta(hours=7, seconds=20)
    delivered_ml = plan.volume_ul(START, later) / 1000
    after = ReservoirState(capacity_ml=20, volume_ml=12 - delivered_ml, low_threshold_ml=2)
    forecast = forecast_reservoir(plan, later, after)
    assert forecast.low_alarm_at == datetime(2025, 3, 13, 16, 0)
    assert forecast.hours_to_low == pytest.approx(10 / 0.15 * 24 - 7 - 20 / 3600)


def test_stopped_pump_never_empties():
    stopped = parse_program({"mode": "stopped", "concentration_ug_per_ml": 500})
    plan = build_plan(compile_regimen(stopped), START, volume_cap_ul=5000)
    forecast = forecast_reservoir(plan, START, ReservoirState(volume_ml=5))
    assert forecast.hours_to_empty is None
    assert forecast.empty_at is None


def test_already_below_threshold_is_low_now():
    plan = build_plan(compile_regimen(_continuous(300)), START, volume_cap_ul=1000)
    forecast = forecast_reservoir(plan, START, ReservoirState(volume_ml=1))
    assert forecast.hours_to_low == 0
    assert forecast.hours_to_empty == pytest.approx(40.0)


@pytest.mark.parametrize(
    "data",
    [
        {"capacity_ml": 30},
        {"capacity_ml": 20, "volume_ml": 21},
        {"capacity_ml": 20, "volume_ml": -1},
        {"low_threshold_ml": 20},
        {"volume_ml": float("nan")},
    ],
)
def test_bad_reservoir_rejected(data):
    with pytest.raises(ValueError):
        ReservoirState(**data)


def test_battery_eri_then_end_of_service_90_days_later():
    battery = BatteryState(implanted_at=START, eri_age_days=2000)
    assert battery.eri_at == START + timedelta(days=2000)
    assert battery.end_of_service_at == START + timedelta(days=2090)
    assert battery_status(battery, START + timedelta(days=1999)).state == "ok"
    assert battery_status(battery, START + timedelta(days=2000)).state == "eri"
    status = battery_status(battery, START + timedelta(days=2050))
    assert status.state == "eri"
    assert status.days_to_end_of_service == pytest.approx(40)
    assert battery_status(battery, START + timedelta(days=2090)).state == "end_of_service"


@pytest.mark.parametrize(
    ("expected", "withdrawn", "capacity", "significant", "suspicion"),
    [
        (5.0, 4.0, 20.0, False, "none"),  # exactly 1 mL: not above the tolerance
        (5.0, 3.9, 20.0, True, "over_infusion"),
        (5.0, 6.2, 20.0, True, "under_infusion"),
        (10.0, 8.5, 40.0, False, "none"),
        (10.0, 7.9, 40.0, True, "over_infusion"),
        (10.0, 12.1, 40.0, True, "under_infusion"),
    ],
)
def test_refill_verdict(expected, withdrawn, capacity, significant, suspicion):
    verdict = refill_verdict(expected, withdrawn, capacity)
    assert verdict.significant is significant
    assert verdict.suspicion == suspicion
    assert verdict.difference_ml == pytest.approx(withdrawn - expected)
    assert verdict.tolerance_ml == (1.0 if capacity == 20 else 2.0)
    if suspicion == "over_infusion":  # less came out: over-infusion, or less went in
        assert "pocket fill" in verdict.explanation and "short fill" in verdict.explanation
        assert "entry error" not in verdict.explanation
        assert verdict.causes == ["over_infusion", "pocket_fill", "short_fill"]
    if suspicion == "under_infusion":  # more came out: under-infusion, or more went in
        assert "pocket fill" not in verdict.explanation
        assert "entry error" in verdict.explanation
        assert verdict.causes == ["under_infusion", "fill_entry_error"]
    if suspicion == "none":
        assert verdict.causes == []


@pytest.mark.parametrize(
    ("expected", "withdrawn", "capacity"), [(5, 4, 30), (-1, 4, 20), (5, 41, 40)]
)
def test_refill_verdict_rejects_bad_input(expected, withdrawn, capacity):
    with pytest.raises(InputError):
        refill_verdict(expected, withdrawn, capacity)
