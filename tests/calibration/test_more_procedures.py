"""Rate, flow-sensor, occlusion and patient-bolus procedures on the simulated bench (virtual
clock), each against a fault the simulated bench really has."""

from __future__ import annotations

import pytest

from calibration.bench import CalibrationError
from calibration.bolus import BolusParams, run_bolus
from calibration.fast import simulated_bench
from calibration.flow_sensor import FlowSensorParams, run_flow_sensor
from calibration.occlusion import OcclusionParams, run_occlusion
from calibration.rate import RateParams, run_rate
from rig.service.config import parse_config

BENCH = {
    "pins": {"pinch_valve": 19},
    "sim": {
        "actual_inner_diameter_mm": 19.41695,
        "stick_slip_speed_mm_per_min": 0.1,  # ≈ 29 µL/min with the 20 mL syringe
        "stick_slip_loss_fraction": 0.2,
        "sensor_offset_ul_per_min": 3.0,
        "seed": 3,
    },
}


@pytest.fixture
def bench_config():
    return parse_config(BENCH)


def test_rate_calibration_shows_stick_slip_at_low_rates(bench_config):
    params = RateParams(rates_ul_per_min=[10, 100], settle_min=0.5, window_min=1.0)
    with simulated_bench(bench_config) as cb:
        result = run_rate(cb, params)
    slow, fast = result.points
    # At 10 µL/min the plunger moves at 0.035 mm/min: 0.2 × (1 − 0.35) of the steps are lost.
    assert slow.error_pct == pytest.approx((1.015**2 * (1 - 0.2 * 0.652) - 1) * 100, abs=1.5)
    assert fast.error_pct == pytest.approx(3.02, abs=0.3)  # the bore only
    assert result.correction_needed
    assert fast.factor == pytest.approx(1 / 1.0302, rel=0.003)


def test_flow_sensor_calibration_finds_the_offset(bench_config):
    params = FlowSensorParams(rates_ul_per_min=[100, 200, 400], settle_min=0.2, window_min=0.5)
    with simulated_bench(bench_config) as cb:
        result = run_flow_sensor(cb, params)
    assert result.zero_offset_ul_per_min == pytest.approx(3.0, abs=0.3)
    assert result.offset_ul_per_min == pytest.approx(-3.0, abs=1.0)
    assert result.scale == pytest.approx(1.0, abs=0.02)
    assert [p.temperature_c for p in result.points] == [20.0] * 3


def test_occlusion_times_the_alarm_and_weighs_the_released_bolus(bench_config):
    with simulated_bench(bench_config) as cb:
        result = run_occlusion(cb, OcclusionParams(settle_min=0.2, max_wait_min=1, release_min=0.5))
        assert not cb.bench.pinch_valve.is_active  # released
    assert result.alarm in ("no_flow", "under_infusion")
    assert 0 < result.time_to_alarm_s < 60
    assert result.time_compression == bench_config.therapy.time_compression
    assert result.time_to_alarm_patient_min == pytest.approx(result.time_to_alarm_s * 1440 / 60)
    assert result.bolus_ul > 2.0
    assert result.samples[0].sensor_ul_per_min < 50  # the flow fell when the valve closed


def test_occlusion_needs_a_pinch_valve():
    with simulated_bench(parse_config({})) as cb, pytest.raises(CalibrationError, match="pinch"):
        run_occlusion(cb, OcclusionParams(settle_min=0.1))


def test_patient_boluses_weighed_one_by_one(bench_config):
    params = BolusParams(count=3, volume_ul=40, settle_s=5, lockout_s=1)
    with simulated_bench(bench_config) as cb:
        result = run_bolus(cb, params)
    assert [p.number for p in result.points] == [1, 2, 3]
    assert result.mean_error_pct == pytest.approx(3.02, abs=0.5)
    assert result.sd_ul < 0.2
