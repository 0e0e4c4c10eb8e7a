"""The syringe is the reservoir: a refill through the refill valve empties it to waste and draws
the new fill from the supply; by hand on a bench without the valve. Virtual clock, in-process."""

from __future__ import annotations

import pytest

from hal.config import PinsConfig
from rig.common.inputs import InputError
from rig.service.api import FaultRequest
from rig.service.config import load_config
from rig.service.loop import StateConflict
from rig.service.virtual import VirtualRig
from tests.service.conftest import program_json


def with_refill_valve():
    config = load_config()
    pins = PinsConfig.model_validate(config.pins.model_dump() | {"refill_valve": 25})
    return config.model_copy(update={"pins": pins})


@pytest.fixture
def valve_rig(tmp_path):
    made = VirtualRig(tmp_path, config=with_refill_valve())
    yield made
    made.close()


@pytest.fixture
def rig(tmp_path):
    made = VirtualRig(tmp_path)
    yield made
    made.close()


def run_until_phase(rig: VirtualRig, phase: str, limit_s: float = 120.0) -> dict:
    end_s = rig.now_s + limit_s
    while rig.now_s < end_s:
        rig.run(0.5)
        refill = rig.service.status()["refill"]
        if refill["phase"] == phase:
            return refill
    raise AssertionError(f"the refill never reached {phase}: {refill}")


def test_the_valve_refill_empties_to_waste_and_fills_from_the_supply(valve_rig):
    rig, service = valve_rig, valve_rig.service
    physics = service.bench.sim.bench
    rig.confirm(program_json("continuous"))
    rig.run(30.0)  # half a patient month: 0.3 mL delivered
    with pytest.raises(StateConflict, match="stop delivery"):
        service.refill_aspirate("clinician")
    service.stop_delivery("clinician")
    rig.run(6.0)
    residual_ml = physics.syringe_volume_ml
    expected_ml = service.engine.state.reservoir.volume_ml
    outlet_before_ul = physics.outlet_volume_ul
    delivered_steps = service.store.delivered_totals()[0]
    service.refill_aspirate("clinician")
    refill = run_until_phase(rig, "aspirated")
    # The whole residual went to waste: by steps and by the balance, not down the line.
    assert refill["withdrawn_ml"] == pytest.approx(residual_ml, abs=0.001)
    assert refill["balance_withdrawn_ml"] == pytest.approx(residual_ml, abs=0.002)
    assert physics.waste_ul == pytest.approx(residual_ml * 1000, abs=1)
    assert physics.outlet_volume_ul == pytest.approx(outlet_before_ul, abs=1)
    assert refill["verdict"]["significant"] is False
    assert refill["withdrawn_ml"] == pytest.approx(expected_ml, abs=0.01)
    assert service.bench.limits.at_empty
    assert service.store.delivered_totals()[0] == delivered_steps  # waste is not delivery
    reply = service.refill_fill(20.0, 500.0, "clinician")
    assert reply["phase"] == "filling"
    refill = run_until_phase(rig, "filled")
    assert physics.syringe_volume_ml == pytest.approx(20.0, abs=0.001)
    assert refill["result"]["volume_ml"] == 20.0
    assert not service.bench.refill_valve.is_active
    # Delivery resumes on the plan, the books and the motor together, no alarm.
    service.start_delivery("clinician")
    rig.run(30.0)
    assert rig.store.alarm_history() == []
    engine = service.engine
    motor_ul = service.motion.zero_ul + service.bench.stepper.steps_issued * service.ul_per_step
    assert abs(engine.state.delivered_ul - motor_ul) < service.ul_per_step


@pytest.mark.slow(seconds=12)
def test_a_short_fill_leaves_air_that_reaches_the_line(valve_rig):
    rig, service = valve_rig, valve_rig.service
    rig.confirm(program_json("continuous"))
    rig.run(5.0)
    service.stop_delivery("clinician")
    service.inject_faults(FaultRequest(short_fill_fraction=0.1))
    service.refill_aspirate("clinician")
    run_until_phase(rig, "aspirated")
    service.refill_fill(20.0, 500.0, "clinician")
    run_until_phase(rig, "filled")
    assert service.bench.sim.bench.syringe_air_ul == pytest.approx(2000, rel=1e-3)
    service.start_delivery("clinician")
    rig.run(10.0)
    assert "air_in_line" in rig.active_codes()


def test_a_wrong_supply_is_what_the_patient_gets(rig):
    service = rig.service
    rig.confirm(program_json("continuous"))
    rig.run(2.0)
    service.stop_delivery("clinician")
    service.inject_faults(FaultRequest(supply_concentration_ug_per_ml=2000.0))
    service.refill_withdrawn(service.engine.state.reservoir.volume_ml)
    filled = service.refill_fill(20.0, 500.0, "clinician")  # the trainee believes 500
    assert filled["actual_concentration_ug_per_ml"] == 2000.0
    assert filled["bridge_bolus_offered"] is False
    reservoir = service.status()["reservoir"]
    assert reservoir["concentration_ug_per_ml"] == 2000.0
    assert reservoir["concentration_mismatch"] is True


def test_without_a_valve_the_refill_is_by_hand(rig):
    service = rig.service
    with pytest.raises(StateConflict, match="no refill valve"):
        service.refill_aspirate("clinician")
    service.refill_withdrawn(20.0)
    with pytest.raises(InputError, match="volume_ml: 25 mL does not fit"):
        service.refill_fill(25.0, 500.0, "clinician")
    service.refill_fill(15.0, 500.0, "clinician")
    assert service.bench.sim.bench.syringe_volume_ml == pytest.approx(15.0)
