"""The physical-truth reproductions over a real service process on the simulated bench.

Real time on purpose: these are the walks a trainer makes (a patient bolus, a priming bolus, a
refill at the wrong concentration) through the HTTP API of a running ``itbrig serve``.
"""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import confirm_program, program_json, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow(seconds=20)]


def alarm_codes(client) -> list[str]:
    return [alarm["code"] for alarm in client.get("/api/alarms")["history"]]


def test_a_patient_bolus_raises_no_alarm_and_slows_the_clock(service):
    client = service.client
    confirm_program(client, program_json("patient_bolus"))
    time.sleep(6.0)  # the line settles
    decision = client.post("/api/bolus/patient")
    assert decision["granted"], decision
    effective = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        effective.append(client.get("/api/status")["clock"]["time_compression_effective"])
        time.sleep(0.05)
    assert min(effective) == pytest.approx(480, rel=1e-6)  # the bolus ran at the bench limit
    time.sleep(8.0)  # the flow monitor's window after the bolus
    status = client.get("/api/status")
    assert status["clock"]["time_compression_effective"] == 1440
    assert alarm_codes(client) == []
    booked = client.get("/api/boluses")
    assert [(b["kind"], b["state"]) for b in booked] == [("patient", "done")]
    assert booked[0]["delivered_ul"] == pytest.approx(50.0, rel=0.01)  # the motor's steps


def test_priming_at_1000_ul_per_h_runs_at_the_bench_limit_and_ends_on_its_step(service):
    client = service.client
    program = program_json("priming_bolus") | {"rate_ul_per_h": 1000.0}
    confirm_program(client, program)
    time.sleep(0.5)
    status = client.get("/api/status")
    assert status["therapy"]["phase"] == "priming_bolus"
    assert status["clock"]["time_compression_effective"] == pytest.approx(156, rel=1e-6)
    assert status["rates"]["bench_ul_per_min"] == pytest.approx(2600, rel=1e-3)
    # 159 µL at 2.6 mL/min: about 3.7 bench seconds, then basal at x1440.
    assert wait_for(lambda: client.get("/api/status")["therapy"]["phase"] != "priming_bolus", 10.0)
    time.sleep(2.0)
    stopped = client.post("/api/stop")
    time.sleep(0.5)
    bench = client.get("/api/bench")
    books_steps = stopped["delivered"]["books_volume_ml"] * 1000 / bench["ul_per_step"]
    assert abs(books_steps - bench["steps_issued"]) < 3  # the motor kept to the books
    assert alarm_codes(client) == []


def test_a_refill_at_2000_over_a_500_program_gives_four_times_the_dose(service_factory):
    service = service_factory(time_scale=14_400)  # a patient day in about 14 bench seconds
    client = service.start()
    confirm_program(client, program_json("continuous"))  # 300 µg/day at 500 µg/mL
    time.sleep(1.0)
    client.post("/api/stop")
    expected_ml = client.get("/api/status")["therapy"]["reservoir"]["volume_ml"]
    client.post("/api/refill/withdrawn", {"withdrawn_ml": expected_ml})
    client.post("/api/refill/fill", {"volume_ml": 20.0, "concentration_ug_per_ml": 2000.0})
    status = client.get("/api/status")
    assert status["reservoir"]["concentration_ug_per_ml"] == 2000.0
    assert status["reservoir"]["concentration_mismatch"] is True
    before = status["delivered"]
    # The service holds the start until a bridge or a recorded "no bridge": the trainee skips it.
    client.post("/api/refill/no-bridge", {"reason": "skipped: the debrief shows what follows"})
    client.post("/api/start")
    started = client.get("/api/status")["patient_time"]
    assert wait_for(
        lambda: elapsed_h(started, client.get("/api/status")["patient_time"]) >= 24, 40.0
    )
    after = client.post("/api/stop")["delivered"]
    books_ug = after["books_dose_ug"] - before["books_dose_ug"]
    patient_ug = after["patient_ug"] - before["patient_ug"]
    assert 300 <= books_ug < 300 * 1.1  # a patient day and a little of the programmed dose
    catheter_ul = status["reservoir"]["catheter_volume_ul"]
    pushed_ul = books_ug / 500 * 1000
    expected_ug = catheter_ul * 0.5 + (pushed_ul - catheter_ul) * 2.0
    assert patient_ug == pytest.approx(expected_ug, rel=0.02)
    assert patient_ug > 3 * books_ug  # the old drug first, then four times the programmed dose


def elapsed_h(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 3600
