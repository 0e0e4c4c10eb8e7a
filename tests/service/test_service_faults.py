"""Each physical fault of the simulated bench raises its alarm.

Detection runs in-process on a virtual clock; the last test goes through a real service process
over HTTP on purpose (a high-priority alarm stops delivery and blocks the patient bolus there).
"""

from __future__ import annotations

import time

import pytest

from rig.service.api import FaultRequest
from rig.service.virtual import BENCH_FAULT_EXAMPLES, VirtualRig
from tests.service.conftest import confirm_program, program_json, wait_for

DETECTION_LIMIT_S = 30.0  # bench seconds at x1440


def active_codes(client) -> list[str]:
    return [alarm["code"] for alarm in client.get("/api/status")["alarms"]]


@pytest.fixture
def rig(tmp_path):
    made = VirtualRig(tmp_path)
    yield made
    made.close()


def inject(rig: VirtualRig, fault: dict) -> None:
    """What ``POST /api/faults`` does, validated the same way."""
    rig.service.inject_faults(FaultRequest.model_validate(fault))


@pytest.mark.parametrize(
    ("fault", "alarm"),
    BENCH_FAULT_EXAMPLES,
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else value,
)
def test_fault_raises_its_alarm(rig, fault, alarm):
    rig.confirm(program_json("continuous"))
    rig.run(9.0)  # settle and fill one monitor window
    assert rig.active_codes() == []
    inject(rig, fault)
    injected_at = rig.now_s
    while alarm not in rig.active_codes() and rig.now_s - injected_at < DETECTION_LIMIT_S:
        rig.run(0.1)
    assert alarm in rig.active_codes(), f"no {alarm} alarm within {DETECTION_LIMIT_S} bench s"
    events = rig.store.events(kind="fault")
    assert any("faults injected" in event["message"] for event in events)


def test_free_flow_while_stopped_raises_flow_while_stopped(rig):
    rig.confirm(program_json("continuous"))
    rig.run(2.0)
    rig.service.stop_delivery("clinician")
    rig.run(10.0)  # the line drains and a stopped window fills
    assert rig.active_codes() == []
    inject(rig, {"free_flow_ul_per_min": 50.0})
    rig.run(DETECTION_LIMIT_S)
    assert rig.active_codes() == ["flow_while_stopped"]


@pytest.mark.slow(seconds=20)
@pytest.mark.timeout(120)
def test_high_priority_alarm_stops_delivery_and_blocks_the_patient_bolus(service):
    client = service.client
    confirm_program(client, program_json("patient_bolus"))
    time.sleep(6.0)
    client.post("/api/faults", {"motor_stalled": True})
    assert wait_for(lambda: "no_flow" in active_codes(client), DETECTION_LIMIT_S)
    status = client.get("/api/status")
    assert status["state"] == "stopped"
    assert status["rates"]["bench_steps_per_s"] == 0
    steps = client.get("/api/bench")["steps_issued"]
    time.sleep(1.0)
    assert client.get("/api/bench")["steps_issued"] == steps
    decision = client.post("/api/bolus/patient")
    assert decision["granted"] is False
    assert decision["reason"] == "alarm_active"
    # Clear the cause and acknowledge: a stopped motor cannot show the line is clear, so the
    # alarm stays until delivery restarts and the monitor sees flow again.
    client.request("DELETE", "/api/faults")
    client.post("/api/alarms/acknowledge-all")
    time.sleep(1.0)
    assert "no_flow" in active_codes(client)
    assert client.post("/api/start")["state"] == "running"
    assert wait_for(lambda: active_codes(client) == [], 20.0)
    assert client.get("/api/status")["state"] == "running"
