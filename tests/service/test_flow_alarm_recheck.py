"""Flow alarms a stopped motor cannot disprove: a kinked line stays an alarm until delivery
runs again and shows flow; alarm texts in the patient's units, the bench's in a detail field.

In-process on a virtual clock (VirtualRig)."""

from __future__ import annotations

import pytest

from rig.service.api import FaultRequest
from rig.service.flow_monitor import NO_FLOW, RUNNING_CONDITIONS, FlowMonitor
from rig.service.loop import StateConflict
from rig.service.virtual import VirtualRig
from tests.service.conftest import program_json

UL_PER_STEP = 0.0204


def test_a_stopped_motor_neither_shows_nor_disproves_no_flow():
    monitor = FlowMonitor(UL_PER_STEP, 1440.0)
    monitor.set_rate(600.0, 0.0)
    status = None
    for index in range(200):  # 10 s of steps at 600 µL/min and no flow measured
        now_s = index * 0.05
        status = monitor.observe(now_s, int(600 / 60 / UL_PER_STEP * now_s), 0.0)
    assert status.conditions == {NO_FLOW} and NO_FLOW in status.judged
    monitor.set_rate(0.0, 10.0)  # delivery stopped by the alarm
    for index in range(200):
        status = monitor.observe(10.0 + index * 0.05, 4900, 0.0)
    assert not status.judged & RUNNING_CONDITIONS  # unknown, not gone


@pytest.fixture
def kinked(tmp_path):
    with VirtualRig(tmp_path) as rig:
        rig.confirm(program_json("continuous"))
        rig.run(9.0)
        rig.service.inject_faults(FaultRequest.model_validate({"occlusion_fraction": 1.0}))
        rig.run(15.0)
        assert "no_flow" in rig.active_codes()
        yield rig


def no_flow(rig: VirtualRig) -> dict:
    return next(a for a in rig.service.alarms.active_alarms() if a["code"] == "no_flow")


def test_acknowledging_no_flow_while_the_line_is_kinked_does_not_clear_it(kinked):
    kinked.service.acknowledge(None, "clinician")
    kinked.run(10.0)
    alarm = no_flow(kinked)
    assert alarm["acknowledged"] and alarm["condition_present"]
    # Restarting re-checks it: still kinked, so it is raised anew and delivery stops again.
    kinked.service.start_delivery("clinician")
    assert no_flow(kinked)["rechecking"]
    kinked.run(10.0)
    alarm = no_flow(kinked)
    assert not alarm["acknowledged"] and not alarm["rechecking"]
    assert kinked.service.state_name == "stopped"
    with pytest.raises(StateConflict, match="acknowledge these alarms first: no_flow"):
        kinked.service.start_delivery("clinician")


def test_once_the_kink_is_gone_a_restart_clears_no_flow(kinked):
    kinked.service.clear_faults()
    kinked.run(10.0)  # the pressure behind the kink releases (flow while stopped), then drains
    kinked.service.acknowledge(None, "clinician")
    kinked.run(2.0)
    assert kinked.active_codes() == ["no_flow"]  # nothing pushed: nothing proven yet
    kinked.service.start_delivery("clinician")
    kinked.run(10.0)
    assert "no_flow" not in kinked.active_codes()
    assert kinked.service.state_name == "running"


def test_flow_alarm_texts_are_clinical_with_the_bench_in_the_detail(kinked):
    alarm = no_flow(kinked)
    assert "µL/h" in alarm["message"] and "patient time" in alarm["message"]
    assert "bench" not in alarm["message"] and "µL/min" not in alarm["message"]
    assert alarm["detail"].startswith("bench: measured") and "µL/min" in alarm["detail"]
    assert alarm["raised_patient_time"].startswith("2026-01-05T")


def test_the_shared_alarm_text_keeps_bench_units_for_engineer_views(kinked):
    from rig.client.format import alarm_text

    kinked.service.acknowledge(None, "clinician")
    alarm = no_flow(kinked)
    text = alarm_text(alarm)
    assert text.startswith("05 Jan 2026 ") and "µL/h" in text
    assert "condition still present" in text and "µL/min" not in text
    assert "µL/min" in alarm_text(alarm, bench=True)


def test_an_engine_alarm_carries_its_patient_time(tmp_path):
    with VirtualRig(tmp_path) as rig:
        rig.confirm(program_json("continuous"))
        rig.service.stop_delivery("clinician")
        volume_ml = rig.service.engine.state.reservoir.volume_ml
        rig.service.refill_withdrawn(volume_ml)
        rig.service.refill_fill(1.5, 500, "clinician")
        rig.run(1.0)
        low = next(a for a in rig.service.alarms.active_alarms() if a["code"] == "low_reservoir")
        assert low["raised_patient_time"].startswith("2026-01-05T")
