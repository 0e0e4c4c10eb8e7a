"""Delivery on the simulated bench: the books, the plunger and the balance agree with the plan.

The long runs use the service in-process on a virtual clock (:mod:`rig.service.virtual`);
one short run over a real service process in real time is kept on purpose: it is the only test
that checks the step thread's real-time pace against the patient clock.
"""

from __future__ import annotations

import time

import pytest

from rig.service.virtual import VirtualRig
from tests.service.conftest import confirm_program, program_json

BENCH_UL_PER_MIN = 600.0  # 300 µg/day at 500 µg/mL = 0.6 mL/day, x1440 = 0.6 mL per bench minute
DENSITY_G_PER_ML = 0.998
SYRINGE_ML = 20.0  # the default 20 mL syringe, filled


def delivered_volumes(readings: dict, ledger_ml: float) -> dict[str, float]:
    return {
        "ledger": ledger_ml,
        "plunger": SYRINGE_ML - readings["syringe_volume_ml"],
        "balance": readings["balance_mass_g"] / DENSITY_G_PER_ML,
    }


@pytest.fixture
def rig(tmp_path):
    made = VirtualRig(tmp_path)
    yield made
    made.close()


def test_two_bench_minutes_deliver_1_2_ml_and_ten_minutes_raise_no_alarm(rig):
    rig.confirm(program_json("continuous"))
    status = rig.service.status()
    assert status["state"] == "running"
    assert status["rates"]["bench_ul_per_min"] == pytest.approx(BENCH_UL_PER_MIN, rel=1e-9)
    rig.run(120.0)
    rig.service.stop_delivery("clinician")
    rig.run(6.0)  # let the line drain into the beaker (τ = 0.6 s)
    readings = rig.service.bench_readings()
    ledger_ml = rig.service.status()["delivered"]["volume_ml"]
    for name, volume_ml in delivered_volumes(readings, ledger_ml).items():
        assert volume_ml == pytest.approx(1.2, rel=0.01), name
    assert ledger_ml == pytest.approx(readings["steps_issued"] * readings["ul_per_step"] / 1000)

    # Carry on to ten bench minutes in all: nominal delivery raises no alarm at all.
    rig.service.start_delivery("clinician")
    rig.run(600.0 - 126.0)
    status = rig.service.status()
    assert status["state"] == "running"
    assert rig.store.alarm_history() == []
    assert status["delivered"]["volume_ml"] == pytest.approx(6.0 - 0.06, rel=0.01)


@pytest.mark.slow(seconds=25)
@pytest.mark.timeout(120)
def test_real_time_delivery_over_a_real_service_process_matches_the_books(service):
    """Real time on purpose: a real process, its step thread and the patient clock together."""
    client = service.client
    started = time.monotonic()
    confirm_program(client, program_json("continuous"))
    time.sleep(20.0 - (time.monotonic() - started))
    client.post("/api/stop")
    elapsed_min = (time.monotonic() - started) / 60
    time.sleep(4.0)  # the line drains into the beaker
    readings = client.get("/api/bench")
    ledger_ml = client.get("/api/status")["delivered"]["volume_ml"]
    expected_ml = BENCH_UL_PER_MIN * elapsed_min / 1000  # 0.2 mL
    for name, volume_ml in delivered_volumes(readings, ledger_ml).items():
        assert volume_ml == pytest.approx(expected_ml, rel=0.03), name
    assert client.get("/api/alarms")["history"] == []


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
