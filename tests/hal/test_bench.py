"""The bench as the rest of the rig builds it: simulated devices under the real drivers."""

from __future__ import annotations

import pytest

from hal.bench import HalUnavailable, build_bench
from hal.config import HardwareConfig, SimConfig
from tests.manual_clock import ManualClock


@pytest.fixture
def sim_bench():
    clock = ManualClock()
    config = HardwareConfig(sim=SimConfig(initial_fill_ml=2.0, sensor_noise_ul_per_min=0.0))
    bench = build_bench(config, "sim", clock=clock, start_stepper=False)
    yield bench, clock
    bench.close()


@pytest.mark.timeout(60)
def test_one_millilitre_through_the_drivers(sim_bench):
    bench, clock = sim_bench
    assert bench.kind == "sim" and bench.sim is not None
    assert bench.balance is not None
    bench.balance.zero()
    steps = round(1000.0 / bench.ul_per_microstep)
    bench.drive.energise()
    bench.stepper.move(steps, 800.0)
    bench.stepper.run_until(10.0, set_clock=clock.set)
    bench.flow_sensor.start()
    bench.stepper.run_until(10.2, set_clock=clock.set)
    reading = bench.flow_sensor.read()
    expected_ul_per_min = 800.0 * bench.ul_per_microstep * 60
    assert reading.flow_ul_per_min == pytest.approx(expected_ul_per_min, rel=0.01)
    assert reading.air_in_line is False
    bench.stepper.run_until(90.0, set_clock=clock.set)
    assert bench.stepper.steps_issued == steps == 27834  # the 20 mL syringe
    assert bench.sim.bench.plunger_travel_mm == pytest.approx(
        (bench.config.syringe.nominal_volume_ml - 1.0) * 1000 / bench.config.syringe.ul_per_mm,
        abs=0.0002,
    )
    weight = bench.balance.read_stable()
    assert weight.stable
    assert weight.mass_g == pytest.approx(0.998, abs=0.0005)
    assert bench.limits.at_empty is False


@pytest.mark.timeout(60)
def test_a_bubble_that_passed_between_reads_is_flagged_once(sim_bench):
    """The sensor keeps air in line flagged until read, as the SLF3S does."""
    bench, clock = sim_bench
    assert bench.sim is not None
    bench.drive.energise()
    bench.stepper.set_rate(800.0)  # about 1 mL/min
    bench.stepper.run_until(5.0, set_clock=clock.set)
    bench.flow_sensor.start()
    bench.stepper.run_until(5.1, set_clock=clock.set)
    assert bench.flow_sensor.read().air_in_line is False
    bench.sim.bench.inject_air_bubble(2.0)  # passes the sensor in about 0.1 s
    bench.stepper.run_until(6.0, set_clock=clock.set)
    assert not bench.sim.bench.air_in_line()
    assert bench.flow_sensor.read().air_in_line is True
    assert bench.flow_sensor.read().air_in_line is False


@pytest.mark.timeout(30)
def test_sim_settings_reach_the_simulated_instruments():
    config = HardwareConfig(
        sim=SimConfig(
            sensor_noise_ul_per_min=0.0,
            balance_noise_g=0.0,
            balance_readability_g=0.0001,
            balance_drift_g_per_h=0.001,
            balance_evaporation_mg_per_h=2.0,
            balance_sir_rate_hz=20.0,
            water_temperature_c=22.5,
        )
    )
    clock = ManualClock()
    bench = build_bench(config, "sim", clock=clock, start_stepper=False)
    try:
        assert bench.sim is not None and bench.sim.balance is not None
        balance = bench.sim.balance
        assert balance.readability_g == 0.0001 and balance.decimals == 4
        assert balance.drift_g_per_h == 0.001
        assert balance.evaporation_mg_per_h == 2.0
        assert balance.sir_rate_hz == 20.0
        assert bench.balance is not None
        clock.advance(1800.0)  # half an hour of drift: 0.5 mg, shown to 0.1 mg
        assert bench.balance.read_immediate().mass_g == pytest.approx(0.0005, abs=1e-12)
        bench.flow_sensor.start()
        clock.advance(0.1)
        assert bench.flow_sensor.read().temperature_c == pytest.approx(22.5, abs=0.005)
    finally:
        bench.close()


def test_estop_and_limit_switch_pins_reach_the_devices(sim_bench):
    bench, _clock = sim_bench
    assert not bench.estop.is_pressed
    bench.sim.bench.press_estop()
    assert bench.estop.is_pressed
    bench.sim.bench.press_estop(False)
    bench.sim.bench.fill(bench.config.syringe.nominal_volume_ml)
    assert bench.limits.at_full


def test_gpio_without_pi_libraries_is_a_clear_error():
    with pytest.raises(HalUnavailable, match="--hal sim"):
        build_bench(HardwareConfig(), "gpio")
