"""After a fill at a new concentration delivery stays stopped until a bridge bolus (or a recorded
"no bridge") is programmed, across a restart; the catheter of a bridge is kept with the pump.
Virtual clock, in-process."""

from __future__ import annotations

import pytest

from rig.common.inputs import InputError
from rig.service.loop import StateConflict
from rig.service.virtual import VirtualRig
from tests.service.conftest import program_json

FLEX_WITH_PATIENT_BOLUS = {
    **program_json("flex"),
    "patient_bolus": program_json("patient_bolus")["patient_bolus"],
}
CATHETER = {"length_cm": 30.0, "ul_per_cm": 2.0, "pump_tubing_ul": 40.0}


def bridge_to(new_concentration: float, then: dict) -> dict:
    following = {k: v for k, v in then.items() if k not in ("drug", "concentration_ug_per_ml")}
    return {
        "mode": "bridge_bolus",
        "drug": "baclofen",
        "concentration_ug_per_ml": new_concentration,
        "catheter": CATHETER,
        "old_concentration_ug_per_ml": 500.0,
        "old_dose_ug_per_day": 320.0,
        "then": following,
    }


def refill_at(rig: VirtualRig, concentration: float) -> dict:
    service = rig.service
    service.stop_delivery("clinician")
    service.refill_withdrawn(service.engine.state.reservoir.volume_ml)
    return service.refill_fill(20.0, concentration, "clinician")


def test_a_new_concentration_blocks_start_until_a_bridge_survives_restart(tmp_path):
    rig = VirtualRig(tmp_path)
    try:
        rig.confirm(FLEX_WITH_PATIENT_BOLUS)
        rig.run(2.0)
        assert refill_at(rig, 1000.0)["bridge_bolus_offered"] is True
        status = rig.service.status()
        assert status["state"] == "stopped"
        assert status["refill"]["bridge_pending"]["new_concentration_ug_per_ml"] == 1000.0
        with pytest.raises(
            StateConflict, match=r"program a bridge bolus \(old concentration 500, new 1000"
        ):
            rig.service.start_delivery("clinician")
    finally:
        rig.close()
    rig = VirtualRig(tmp_path)  # the books remember the pending bridge
    try:
        service = rig.service
        with pytest.raises(StateConflict, match="refilled at 1000 µg/mL"):
            service.start_delivery("clinician")
        rig.confirm({**FLEX_WITH_PATIENT_BOLUS, "concentration_ug_per_ml": 1000.0})
        with pytest.raises(StateConflict, match="bridge"):  # not a bridge: still blocked
            service.start_delivery("clinician")
        rig.confirm(bridge_to(1000.0, FLEX_WITH_PATIENT_BOLUS))
        status = service.status()
        assert status["refill"]["bridge_pending"] is None
        assert status["catheter"] == {**CATHETER, "volume_ul": 100.0}
        service.start_delivery("clinician")
        assert service.status()["therapy"]["phase"] == "bridge_bolus"
        assert service.status()["therapy"]["program"]["then"]["mode"] == "flex"
    finally:
        rig.close()


def test_no_bridge_needs_a_pending_bridge_and_is_recorded_with_its_reason(tmp_path):
    with VirtualRig(tmp_path) as rig:
        service = rig.service
        rig.confirm(program_json("continuous"))
        with pytest.raises(InputError, match="no bridge bolus is pending"):
            service.record_no_bridge("catheter flushed", "clinician")
        refill_at(rig, 2000.0)
        service.record_no_bridge("catheter replaced and primed at 2000", "clinician")
        assert service.status()["refill"]["bridge_pending"] is None
        service.start_delivery("clinician")
        assert service.state_name == "running"
        reasons = [e["message"] for e in rig.store.events(kind="refill", limit=10)]
        assert "no bridge bolus: catheter replaced and primed at 2000" in reasons
