"""End to end: a real service process delivers a program on the simulated bench."""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import confirm_program, program_json

BENCH_UL_PER_MIN = 600.0  # 300 µg/day at 500 µg/mL = 0.6 mL/day, x1440 = 0.6 mL per bench minute
DENSITY_G_PER_ML = 0.998


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_bench_minutes_deliver_1_2_ml_and_ten_nominal_minutes_raise_no_alarm(service):
    client = service.client
    started = time.monotonic()
    status = confirm_program(client, program_json("continuous"))
    assert status["state"] == "running"
    assert status["rates"]["bench_ul_per_min"] == pytest.approx(BENCH_UL_PER_MIN, rel=1e-9)
    time.sleep(120.0 - (time.monotonic() - started))
    client.post("/api/stop")
    elapsed_min = (time.monotonic() - started) / 60
    expected_ml = BENCH_UL_PER_MIN * elapsed_min / 1000
    assert expected_ml == pytest.approx(1.2, rel=0.002)
    time.sleep(6.0)  # let the line drain into the beaker (τ = 0.6 s)
    bench = client.get("/api/bench")
    ledger_ml = client.get("/api/status")["delivered"]["volume_ml"]
    plunger_ml = 10.0 - bench["syringe_volume_ml"]
    balance_ml = bench["balance_mass_g"] / DENSITY_G_PER_ML
    volumes = {"ledger": ledger_ml, "plunger": plunger_ml, "balance": balance_ml}
    for name, volume_ml in volumes.items():
        assert volume_ml == pytest.approx(expected_ml, rel=0.01), name
        assert volume_ml == pytest.approx(1.2, rel=0.01), name
    assert ledger_ml == pytest.approx(bench["steps_issued"] * bench["ul_per_step"] / 1000, rel=1e-6)

    # Carry on to ten bench minutes in all: nominal delivery raises no alarm at all.
    client.post("/api/start")
    time.sleep(600.0 - (time.monotonic() - started))
    status = client.get("/api/status")
    assert status["state"] == "running"
    assert client.get("/api/alarms")["history"] == []
    assert status["delivered"]["volume_ml"] == pytest.approx(6.0, rel=0.02)


def test_sigterm_closes_the_books_and_restart_is_clean(service_factory):
    service = service_factory()
    client = service.start()
    confirm_program(client, program_json("continuous"))
    time.sleep(3.0)
    assert service.stop() == 0
    client = service.start()
    status = client.get("/api/status")
    assert status["state"] == "running"  # a clean stop is not a power loss
    assert [a["code"] for a in status["alarms"]] == []
    assert status["delivered"]["volume_ml"] > 0.02
