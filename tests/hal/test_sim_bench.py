"""The simulated bench's physics, driven through the real device classes and step generator."""

from __future__ import annotations

import math

import pytest

from hal.config import HardwareConfig, PinsConfig, SimConfig
from hal.devices import LimitSwitches, SyringeDrive
from hal.sim.bench import STALL_PRESSURE_KPA, SimulatedBench
from hal.stepgen import SoftwareStepGenerator
from tests.manual_clock import ManualClock


@pytest.fixture
def rig(mock_factory):
    """Drive, switches, stepper and physics over one MockFactory under a virtual clock."""
    config = HardwareConfig(
        pins=PinsConfig(pinch_valve=19, leak_valve=26), sim=SimConfig(initial_fill_ml=1.2)
    )
    clock = ManualClock()
    drive = SyringeDrive.from_config(config.pins, config.drive, pin_factory=mock_factory)
    limits = LimitSwitches(
        config.pins.limit_full, config.pins.limit_empty, pin_factory=mock_factory
    )
    physics = SimulatedBench(config, mock_factory, clock=clock)
    stepper = SoftwareStepGenerator(drive, clock=clock)
    drive.energise()
    yield config, clock, drive, limits, physics, stepper
    stepper.close()
    physics.close()


def run(stepper: SoftwareStepGenerator, clock: ManualClock, until_s: float) -> int:
    return stepper.run_until(until_s, set_clock=clock.set)


def test_one_millilitre_move_matches_geometry_and_balance(rig):
    config, clock, _drive, _limits, physics, stepper = rig
    steps = round(1000.0 / config.ul_per_microstep)
    assert steps == 27834  # 1 mL / (287.42 µL/mm / 8000 µsteps/mm), the 20 mL syringe
    travel_before_mm = physics.plunger_travel_mm
    stepper.move(steps, 5000.0)
    issued = run(stepper, clock, 60.0)
    assert issued == steps
    assert physics.steps_seen == steps
    travel_mm = physics.plunger_travel_mm - travel_before_mm
    assert travel_mm == pytest.approx(steps / config.drive.microsteps_per_mm, rel=1e-9)
    assert travel_mm == pytest.approx(1000.0 / config.syringe.ul_per_mm, abs=0.0002)
    # After the line has drained (τ = C·R = 0.6 s), the beaker holds 1 mL of water.
    assert physics.outlet_mass_g() == pytest.approx(0.998, abs=0.0005)
    assert physics.syringe_volume_ml == pytest.approx(0.2, abs=0.0001)


def test_flow_lags_steps_with_the_line_time_constant(rig):
    config, clock, _drive, _limits, physics, stepper = rig
    rate_steps_per_s = 1000.0
    stepper.set_rate(rate_steps_per_s)
    step_flow_ul_per_min = rate_steps_per_s * config.ul_per_microstep * 60
    tau_s = (
        config.sim.tubing_compliance_ul_per_kpa * config.sim.catheter_resistance_kpa_min_per_ul * 60
    )
    run(stepper, clock, tau_s)
    one_tau = physics.sensor_flow_ul_per_min()
    assert one_tau == pytest.approx(step_flow_ul_per_min * (1 - math.exp(-1)), rel=0.02)
    run(stepper, clock, 10 * tau_s)
    assert physics.sensor_flow_ul_per_min() == pytest.approx(step_flow_ul_per_min, rel=0.01)


def test_disabled_driver_ignores_steps(rig):
    _config, clock, drive, _limits, physics, stepper = rig
    drive.release()
    stepper.set_rate(1000.0)
    run(stepper, clock, 1.0)
    assert physics.steps_seen == 1000
    assert physics.steps_moved == 0
    assert physics.outlet_volume_ul == 0.0


def test_withdraw_move_refills_and_full_limit_switch_closes(rig):
    config, clock, _drive, limits, physics, stepper = rig
    physics.fill(config.syringe.nominal_volume_ml - 0.1)
    assert not limits.at_full
    to_full = round(100.0 / config.ul_per_microstep) + 100  # past the end: the stop holds
    stepper.move(to_full, 8000.0, withdraw=True)
    run(stepper, clock, 60.0)
    assert limits.at_full
    assert physics.syringe_volume_ml == pytest.approx(config.syringe.nominal_volume_ml)
    assert stepper.steps_withdrawn == to_full


def test_empty_limit_switch_closes_at_the_end_of_stroke(rig):
    config, clock, _drive, limits, physics, stepper = rig
    stepper.move(round(1200.0 / config.ul_per_microstep) + 10, 4000.0)
    run(stepper, clock, 60.0)
    assert limits.at_empty
    assert physics.syringe_volume_ml == pytest.approx(0.0, abs=1e-9)


def test_stall_issues_steps_but_the_plunger_stays(rig):
    _config, clock, _drive, _limits, physics, stepper = rig
    physics.inject(motor_stalled=True)
    before_mm = physics.plunger_travel_mm
    stepper.set_rate(2000.0)
    run(stepper, clock, 2.0)
    assert stepper.steps_issued == 4000
    assert physics.plunger_travel_mm == before_mm
    assert physics.sensor_flow_ul_per_min() == 0.0


def test_slipping_drive_loses_its_fraction_of_steps(rig):
    _config, clock, _drive, _limits, physics, stepper = rig
    physics.inject(slip_fraction=0.25)
    stepper.set_rate(2000.0)
    run(stepper, clock, 2.0)
    assert physics.steps_moved == 3000


def test_full_occlusion_builds_pressure_until_the_motor_stalls(rig):
    _config, clock, _drive, _limits, physics, stepper = rig
    physics.inject(occlusion_fraction=1.0)
    stepper.set_rate(5000.0)
    run(stepper, clock, 30.0)
    assert physics.sensor_flow_ul_per_min() == 0.0
    assert physics.outlet_volume_ul == 0.0
    assert physics.line_pressure_kpa == pytest.approx(STALL_PRESSURE_KPA, rel=0.01)
    assert physics.steps_moved < stepper.steps_issued


def test_leak_diverts_its_fraction_before_the_sensor(rig):
    config, clock, _drive, _limits, physics, stepper = rig
    physics.inject(leak_fraction=0.3)
    stepper.set_rate(1000.0)
    run(stepper, clock, 20.0)
    step_flow_ul_per_min = 1000.0 * config.ul_per_microstep * 60
    assert physics.sensor_flow_ul_per_min() == pytest.approx(0.7 * step_flow_ul_per_min, rel=0.01)
    total = physics.outlet_volume_ul + physics.leaked_volume_ul
    assert physics.leaked_volume_ul / total == pytest.approx(0.3, abs=0.01)


def test_pinch_and_leak_valve_pins_act_on_the_line(rig, mock_factory):
    config, clock, _drive, _limits, physics, stepper = rig
    from hal.devices import LeakValve, PinchValve

    pinch = PinchValve(config.pins.pinch_valve, pin_factory=mock_factory)
    leak = LeakValve(config.pins.leak_valve, pin_factory=mock_factory)
    stepper.set_rate(1000.0)
    run(stepper, clock, 10.0)
    open_flow = physics.sensor_flow_ul_per_min()
    leak.on()
    run(stepper, clock, 20.0)
    assert physics.sensor_flow_ul_per_min() == pytest.approx(0.5 * open_flow, rel=0.02)
    leak.off()
    pinch.on()
    run(stepper, clock, 21.0)
    assert physics.sensor_flow_ul_per_min() < 0.5 * open_flow
    pinch.close()
    leak.close()


def test_free_flow_runs_with_the_motor_stopped(rig):
    _config, clock, _drive, _limits, physics, _stepper = rig
    physics.inject(free_flow_ul_per_min=50.0)
    clock.set(30.0)
    assert physics.sensor_flow_ul_per_min() == pytest.approx(50.0, rel=0.01)
    assert physics.syringe_volume_ml == pytest.approx(1.2 - 0.025, abs=1e-6)


def test_runaway_noise_steps_over_infuse(rig):
    config, clock, _drive, _limits, physics, stepper = rig
    physics.inject(spurious_steps_per_s=750.0)
    stepper.set_rate(250.0)
    run(stepper, clock, 10.0)
    expected_ul_per_min = 1000.0 * config.ul_per_microstep * 60
    assert physics.sensor_flow_ul_per_min() == pytest.approx(expected_ul_per_min, rel=0.01)


def test_mis_set_driver_jumpers_change_volume_per_step(rig):
    config, clock, _drive, _limits, physics, stepper = rig
    physics.inject(driver_microstepping=16)
    stepper.set_rate(1000.0)
    run(stepper, clock, 10.0)
    expected_ul_per_min = 2000.0 * config.ul_per_microstep * 60
    assert physics.sensor_flow_ul_per_min() == pytest.approx(expected_ul_per_min, rel=0.01)


def test_air_bubble_flags_until_it_has_passed(rig):
    config, clock, _drive, _limits, physics, stepper = rig
    stepper.set_rate(1000.0)
    run(stepper, clock, 5.0)
    physics.inject_air_bubble(10.0)
    assert physics.air_in_line()
    flow_ul_per_s = 1000.0 * config.ul_per_microstep
    run(stepper, clock, 5.0 + 10.0 / flow_ul_per_s + 0.5)
    assert not physics.air_in_line()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"occlusion_fraction": 1.5}, "occlusion_fraction"),
        ({"leak_fraction": 1.0}, "leak_fraction"),
        ({"slip_fraction": -0.1}, "slip_fraction"),
        ({"free_flow_ul_per_min": float("nan")}, "free_flow_ul_per_min"),
        ({"motor_stalled": "yes"}, "motor_stalled"),
        ({"driver_microstepping": 3}, "driver_microstepping"),
        ({"gremlins": 1}, "gremlins"),
    ],
)
def test_bad_fault_values_are_rejected_and_change_nothing(rig, changes, message):
    *_, physics, _stepper = rig
    before = physics.inject(occlusion_fraction=0.2)
    with pytest.raises(ValueError, match=message):
        physics.inject(**{"motor_stalled": True, **changes})
    assert physics.faults == before
