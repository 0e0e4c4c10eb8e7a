"""The calibration endpoints over the real app in-process (FastAPI's TestClient) on a VirtualRig:
the engineer starts, follows, applies and rolls back; others are refused; records export."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from rig.service.api import create_app
from rig.service.auth import Authenticator
from rig.service.virtual import VirtualRig
from tests.calibration.conftest import TRUE_RATIO

QUICK_VOLUME = {"volumes_ul": [20, 40, 80], "settle_s": 5, "blank_s": 0, "prime_ul": 20}


@pytest.fixture
def api(tmp_path, wide_bore):
    with VirtualRig(tmp_path, config=wide_bore) as rig:
        rig.run(1.0)
        http = TestClient(create_app(rig.service, Authenticator(rig.store)))

        def login(role: str, pin: str) -> dict[str, str]:
            token = http.post("/api/login", json={"role": role, "pin": pin}).json()["token"]
            return {"X-Session": token}

        yield rig, http, login("engineer", "3333"), login("clinician", "2222")
        http.close()


def test_engineer_runs_applies_and_exports_a_volume_calibration(api):
    rig, http, engineer, clinician = api
    listing = http.get("/api/calibration").json()
    assert [p["name"] for p in listing["procedures"]] == [
        "volume", "accuracy", "rate", "flow-sensor", "occlusion", "bolus"
    ]  # fmt: skip
    assert listing["in_force"]["volume_version"] is None

    refused = http.post("/api/calibration/runs", json={"procedure": "volume"}, headers=clinician)
    assert refused.status_code == 403

    bad = {"procedure": "volume", "params": {"volumes_ul": [1, 2]}}
    answer = http.post("/api/calibration/runs", json=bad, headers=engineer)
    assert answer.status_code == 409
    assert "volumes_ul" in answer.text

    body = {"procedure": "volume", "params": QUICK_VOLUME}
    started = http.post("/api/calibration/runs", json=body, headers=engineer).json()
    assert rig.service.calibrations.wait_finished(60.0)
    job = http.get("/api/calibration", params={"since": 1}).json()["job"]
    assert job["state"] == "done" and job["fraction"] == 1.0
    assert len(job["samples_since"]) == 2  # of three weighed points
    assert job["result"]["coefficient"] == pytest.approx(TRUE_RATIO, rel=0.003)

    run_id = started["run_id"]
    applied = http.post("/api/calibration/apply", json={"run_id": run_id}, headers=engineer)
    assert applied.status_code == 200, applied.text
    in_force = http.get("/api/calibration").json()["in_force"]
    assert in_force["volume_version"] == 1
    assert in_force["ul_per_step"] == pytest.approx(job["result"]["ul_per_step_measured"])
    assert http.get("/api/status").json()["state"] == "stopped"

    csv = http.get(f"/api/calibration/runs/{run_id}/samples.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "mass_g,steps"  # the books keep keys sorted
    pdf = http.get(f"/api/calibration/runs/{run_id}/report.pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert http.get("/api/calibration/runs/999/report.pdf").status_code == 404

    back = http.post("/api/calibration/rollback", json={"kind": "volume"}, headers=engineer)
    assert back.json() == {"kind": "volume", "version": 2, "value": None}
    actions = [row["action"] for row in rig.store.audit_log() if row["outcome"] == "ok"]
    assert [a for a in actions if a.startswith("calibration.")] == [
        "calibration.start", "calibration.apply", "calibration.rollback"
    ]  # fmt: skip
