"""A scenario over a real rig service process: started, followed and acted on with
``itbrig scenario`` and the rig's own commands, stopped, scored and debriefed from the books."""

from __future__ import annotations

import csv
import json

import httpx
import pytest

from rig.cli import main
from rig.client.http import ServiceRejected
from tests.service.conftest import EXAMPLES, cli_of


@pytest.fixture
def cli(service_factory, monkeypatch, tmp_path, capsys):
    service = service_factory(time_scale=360.0)  # the deadlines hold on a loaded machine
    service.start()
    return cli_of(service, monkeypatch, tmp_path, capsys)


def _json(result: tuple[int, str, str]):
    code, out, err = result
    assert code == 0, err
    return json.loads(out)


def test_binding_commands_without_a_service(capsys):
    assert main(["scenario", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in listed} >= {"pocket_fill", "screening_trial"}
    assert main(["scenario", "run", "low_battery_reset", "--fast", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["score"] == 0.0 and report["mastery"] is False
    assert report["missed"] == ["interrogate", "assess", "restore", "acknowledge", "replace"]
    assert main(["scenario", "run", "no_such", "--fast"]) == 2
    assert "shipped: " in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_routine_refill_over_the_service_reaches_mastery(cli, tmp_path):
    catalogue = cli.client.get("/api/training")  # type: ignore[attr-defined]
    assert len(catalogue["faults"]) == 11 and "lumbar_bolus" in catalogue["actions"]
    assert {s["name"] for s in catalogue["scenarios"]} >= {"routine_refill", "pocket_fill"}
    code, _, err = cli("scenario", "status")
    assert code == 2 and "no scenario has been started" in err
    started = _json(cli("scenario", "run", "routine_refill", "--mode", "guided",
                        "--trainee", "Robin", "--json"))  # fmt: skip
    assert started["scenario"] == "routine_refill" and started["hints"]
    code, _, err = cli("scenario", "run", "pocket_fill")
    assert code == 2 and "is running" in err
    code, _, err = cli("scenario", "act", "dance")
    assert code == 2 and "not a clinical action" in err
    for action in ("interrogate_pump", "assess_patient"):
        assert cli("scenario", "act", action)[0] == 0
    assert cli("stop")[0] == 0
    assert cli("scenario", "act", "locate_fill_port")[0] == 0
    syringe_ml = cli.client.get("/api/bench")["syringe_volume_ml"]  # type: ignore[attr-defined]
    assert cli("refill", "withdrawn", f"{syringe_ml:.2f}")[0] == 0
    assert cli("scenario", "act", "verify_concentration")[0] == 0
    assert cli("refill", "fill", "20", "--concentration", "1000")[0] == 0
    assert cli("program", "propose", str(EXAMPLES / "bridge_bolus.toml"))[0] == 0
    assert cli("program", "confirm", "--accept-warnings")[0] == 0
    assert cli("start")[0] == 0
    assert cli("scenario", "act", "assess_patient")[0] == 0
    client = cli.client  # type: ignore[attr-defined]
    set_fault = client.post("/api/training/faults", {"fault": "intermittent_stall",
                            "params": {"period_h": 6, "stalled_h": 0.1}})  # fmt: skip
    assert set_fault["action"] == "intermittent_stall" and set_fault["source"] == "fault"
    with pytest.raises(ServiceRejected) as refused:
        client.post("/api/training/faults", {"fault": "gremlins"})
    assert refused.value.status_code == 422
    with pytest.raises(ServiceRejected) as refused:
        client.post("/api/training/faults", {"fault": "mri_stall", "params": {"recovery_h": "x"}})
    assert refused.value.status_code == 409 and "params" in str(refused.value)
    status = _json(cli("scenario", "status", "--json"))
    assert status["patient"]["mas"] in ("1", "1+") and not status["finished"]
    done = [action["action"] for action in status["actions"]]
    assert done[:3] == ["interrogate_pump", "assess_patient", "stop"]
    assert {"refill_withdrawn", "refill_fill", "program_confirmed", "start"} <= set(done)
    report = _json(cli("scenario", "stop", "--json"))
    assert report["mastery"] is True, report["missed"]
    assert report["trainee"] == "Robin" and report["stopped_early"] is True
    kept = _json(cli("scenario", "report", "--json", "--csv", str(tmp_path / "debrief.csv")))
    assert kept["score"] == report["score"] and kept["actions"] == report["actions"]
    rows = list(csv.reader((tmp_path / "debrief.csv").open(encoding="utf-8")))
    assert rows[1] == ["trainee", "Robin"]
    served = httpx.get(f"{cli.url}/api/training/report", params={"format": "csv"})  # type: ignore[attr-defined]
    assert served.headers["content-type"].startswith("text/csv")
    assert served.text.splitlines()[1] == "trainee,Robin"
    code, _, err = cli("scenario", "stop")
    assert code == 2 and "already ended" in err
