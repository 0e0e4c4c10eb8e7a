"""The simulated bench's drive train errors: true bore, backlash and stick-slip."""

from __future__ import annotations

import pytest

from hal.config import HardwareConfig, SimConfig
from hal.devices import SyringeDrive
from hal.sim.bench import SimulatedBench
from hal.stepgen import SoftwareStepGenerator
from tests.manual_clock import ManualClock


def _bench(mock_factory, **sim: object):
    config = HardwareConfig(sim=SimConfig(initial_fill_ml=5.0, **sim))
    clock = ManualClock()
    drive = SyringeDrive.from_config(config.pins, config.drive, pin_factory=mock_factory)
    physics = SimulatedBench(config, mock_factory, clock=clock)
    stepper = SoftwareStepGenerator(drive, clock=clock)
    drive.energise()
    return config, clock, physics, stepper


def _delivered_ul(physics, stepper, clock, steps: int, steps_per_s: float) -> float:
    before_ul = physics.outlet_volume_ul + physics.line_volume_ul
    stepper.move(steps, steps_per_s)
    stepper.run_until(clock() + steps / steps_per_s + 30.0, clock.set)
    return physics.outlet_volume_ul + physics.line_volume_ul - before_ul


def test_the_true_bore_sets_the_volume_per_step(mock_factory):
    config, clock, physics, stepper = _bench(mock_factory, actual_inner_diameter_mm=19.13 * 1.015)
    assert config.sim_inner_diameter_mm == pytest.approx(19.41695)
    steps = 20_000
    delivered_ul = _delivered_ul(physics, stepper, clock, steps, 2000.0)
    assert delivered_ul / (steps * config.ul_per_microstep) == pytest.approx(1.015**2, rel=1e-6)
    # The barrel's graduations still read nominal: a 5 mL fill is 5 mL by the marks, more by bore.
    assert physics.syringe_volume_ml == pytest.approx(
        (5.0 - 20_000 * config.ul_per_microstep / 1000) * 1.015**2, rel=1e-6
    )
    stepper.close()
    physics.close()


def test_backlash_swallows_the_first_steps_after_a_reversal(mock_factory):
    config, clock, physics, stepper = _bench(mock_factory, backlash_mm=0.02)
    backlash_steps = round(0.02 * config.drive.microsteps_per_mm)  # 160 microsteps
    first_ul = _delivered_ul(physics, stepper, clock, 1000, 1000.0)
    second_ul = _delivered_ul(physics, stepper, clock, 1000, 1000.0)
    assert first_ul == pytest.approx((1000 - backlash_steps) * config.ul_per_microstep)
    assert second_ul == pytest.approx(1000 * config.ul_per_microstep)
    stepper.move(500, 1000.0, withdraw=True)
    stepper.run_until(clock() + 5.0, clock.set)
    third_ul = _delivered_ul(physics, stepper, clock, 1000, 1000.0)
    assert third_ul == pytest.approx((1000 - backlash_steps) * config.ul_per_microstep)
    stepper.close()
    physics.close()


def test_stick_slip_loses_steps_only_at_low_speed(mock_factory):
    config, clock, physics, stepper = _bench(
        mock_factory, stick_slip_speed_mm_per_min=0.1, stick_slip_loss_fraction=0.2
    )
    steps_per_mm = config.drive.microsteps_per_mm
    slow_steps_per_s = 0.025 * steps_per_mm / 60  # a quarter of the stick-slip speed
    slow_ul = _delivered_ul(physics, stepper, clock, 400, slow_steps_per_s)
    assert slow_ul / (400 * config.ul_per_microstep) == pytest.approx(1 - 0.2 * 0.75, abs=0.01)
    fast_steps_per_s = 0.2 * steps_per_mm / 60
    fast_ul = _delivered_ul(physics, stepper, clock, 400, fast_steps_per_s)
    assert fast_ul == pytest.approx(400 * config.ul_per_microstep)
    stepper.close()
    physics.close()


def test_defaults_leave_nominal_geometry_untouched(mock_factory):
    config, clock, physics, stepper = _bench(mock_factory)
    assert _delivered_ul(physics, stepper, clock, 3000, 1000.0) == pytest.approx(
        3000 * config.ul_per_microstep
    )
    stepper.close()
    physics.close()
