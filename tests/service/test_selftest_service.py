"""The self-test at service start: a failed check blocks delivery with a high alarm naming the
part, in-process on a virtual clock and over a real ``itbrig serve`` process."""

from __future__ import annotations

import httpx
import pytest

from rig.service.virtual import VirtualRig
from tests.service.conftest import confirm_program, program_json

CONTINUOUS = {
    "drug": "baclofen",
    "concentration_ug_per_ml": 500,
    "mode": "continuous",
    "dose_ug_per_day": 300,
}


def press_estop(bench) -> None:
    bench.sim.bench.press_estop()


@pytest.mark.timeout(120)
def test_a_failed_self_test_blocks_delivery_until_a_restart_passes(tmp_path):
    rig = VirtualRig(tmp_path, self_test=True, before_self_test=press_estop)
    try:
        service = rig.service
        assert service.self_test is not None and not service.self_test.passed
        assert "self_test_failed" in rig.active_codes()
        status = service.status()
        alarm = next(a for a in status["alarms"] if a["code"] == "self_test_failed")
        assert alarm["priority"] == "high"
        assert alarm["message"].startswith("self-test failed: limit switches and emergency stop: ")
        assert "emergency stop (BCM 13) is pressed" in alarm["message"]
        assert status["self_test_passed"] is False
        # A program confirmed now is kept but not delivered; starting is refused, naming why.
        rig.confirm(CONTINUOUS)
        with pytest.raises(Exception, match="delivery is blocked: the power-on self-test failed"):
            service.start_delivery("clinician")
        # Acknowledging does not clear it: the part is still broken for this service run.
        rig.bench.sim.bench.press_estop(False)
        service.acknowledge(None, "clinician")
        rig.run(10.0)
        assert "self_test_failed" in rig.active_codes()
        assert rig.bench.stepper.steps_issued == 0
        assert not rig.bench.drive.is_enabled
        events = rig.store.events(kind="self_test")
        assert len(events) == 1 and events[0]["detail"]["passed"] is False
    finally:
        rig.close()

    # The part is fixed and the service restarts: the self-test passes, the old alarm is gone once
    # acknowledged, and delivery can start again.
    rig = VirtualRig(tmp_path, self_test=True)
    try:
        service = rig.service
        assert service.self_test.passed
        service.acknowledge(None, "clinician")
        assert "self_test_failed" not in rig.active_codes()
        service.start_delivery("clinician")
        rig.run(5.0)
        assert rig.bench.stepper.steps_issued > 0
        assert [e["detail"]["passed"] for e in rig.store.events(kind="self_test")] == [False, True]
    finally:
        rig.close()


@pytest.mark.timeout(120)
def test_a_dropped_out_sensor_names_the_flow_sensor_and_the_service_still_runs(tmp_path):
    from hal.sim.flow_sensor import SensorFaults

    def unplug_sensor(bench) -> None:
        bench.sim.flow_sensor.set_faults(SensorFaults(dropout=True))

    rig = VirtualRig(tmp_path, self_test=True, before_self_test=unplug_sensor)
    try:
        message = rig.service.self_test.failure_message()
        assert message.startswith("self-test failed: flow sensor: ")
        rig.run(5.0)  # the loop keeps running: the flow monitor reports the silent sensor too
        assert {"self_test_failed", "sensor_fault"} <= set(rig.active_codes())
    finally:
        rig.close()


@pytest.mark.timeout(120)
def test_a_passing_self_test_over_a_real_service(service):
    client = service.client
    report = client.get("/api/selftest")
    assert report["passed"] is True
    assert [check["name"] for check in report["checks"]][:3] == ["pins", "enable", "switches"]
    assert client.get("/api/status")["self_test_passed"] is True
    events = client.get("/api/events", kind="self_test")
    assert events and events[0]["message"] == "self-test passed"


@pytest.mark.timeout(120)
def test_a_real_service_with_full_books_raises_the_alarm_and_refuses_to_start(
    service_factory, tmp_path
):
    config = tmp_path / "rig.toml"
    config.write_text("[selftest]\nmin_free_mb = 1e12\n")
    service = service_factory(extra_args=["--config", str(config)])
    client = service.start()
    status = client.get("/api/status")
    assert status["state"] == "stopped"
    alarm = next(a for a in status["alarms"] if a["code"] == "self_test_failed")
    assert alarm["priority"] == "high"
    assert "books (data directory): " in alarm["message"]
    assert "selftest.min_free_mb" in alarm["message"]
    report = client.get("/api/selftest")
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["books"]
    confirm_program(client, program_json("continuous"))
    with httpx.Client(base_url=service.url) as http:
        refused = http.post("/api/start", headers={"X-Session": client.session_token})
    assert refused.status_code == 409
    assert "the power-on self-test failed" in refused.json()["detail"][0]["message"]
    assert client.get("/api/bench")["steps_issued"] == 0
