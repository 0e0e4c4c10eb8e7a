"""Scenarios on the real service under a virtual clock: every shipped scenario end to end with no
trainee (no mastery) and with its model answer (mastery), the faults' effects on the patient and
the pump, the pocket fill's discrepancy, the screening trial's response, the debrief."""

from __future__ import annotations

import csv
import io
import itertools
import json

import pytest

from rig.common.inputs import InputError
from rig.service.training import debrief_csv, run_fast
from rig.therapy.scenario import MAS_LEVELS_INDEX, load_scenario, parse_scenario, shipped_scenarios

SHIPPED = sorted(shipped_scenarios())


def _signs(report: dict) -> set[str]:
    return {sign for entry in report["timeline"] for sign in entry["signs"]}


def test_at_least_seven_scenarios_are_shipped():
    assert len(SHIPPED) >= 7
    for name in ("routine_refill", "pocket_fill", "kinked_catheter", "runaway_overdose"):
        assert name in SHIPPED
    for name in ("empty_reservoir", "low_battery_reset", "screening_trial"):
        assert name in SHIPPED


HARM_WITHOUT_ACTION = {
    "runaway_overdose": {"somnolence", "respiratory_depression"},
    "kinked_catheter": {"pruritus", "rebound_spasticity", "fever"},
    "empty_reservoir": {"pruritus", "rebound_spasticity"},
    "low_battery_reset": {"pruritus", "rebound_spasticity"},
    "pocket_fill": {"drowsiness", "pruritus"},
}
"""What the patient shows when nobody acts (a depot absorbed, then a reservoir run dry)."""


@pytest.mark.parametrize("name", SHIPPED)
def test_no_action_trainee_misses_and_model_answer_reaches_mastery(name):
    scenario = load_scenario(name)
    idle = run_fast(scenario)
    assert idle["mastery"] is False
    assert idle["missed"] and idle["score"] < scenario.mastery_fraction
    assert idle["critical_missed"]
    hours = [entry["at_h"] for entry in idle["timeline"]]
    assert hours[0] == 0.0 and hours[-1] == pytest.approx(scenario.duration_h)
    assert max(b - a for a, b in itertools.pairwise(hours)) <= 1.0  # at least hourly
    assert HARM_WITHOUT_ACTION.get(name, set()) <= _signs(idle)
    good = run_fast(scenario, script=scenario.model_answer, trainee="Alex")
    assert good["mastery"] is True, good["missed"]
    assert good["missed"] == [] and good["score"] == 1.0 and good["trainee"] == "Alex"


def test_pocket_fill_shows_exactly_the_less_withdrawn_discrepancy():
    scenario = load_scenario("pocket_fill")
    report = run_fast(scenario, script=scenario.model_answer)
    fault = next(a for a in report["actions"] if a["action"] == "pocket_fill")
    withdrawn = next(a for a in report["actions"] if a["action"] == "refill_withdrawn")
    assert withdrawn["params"]["significant"] is True
    # Less withdrawn than expected, by what went under the skin (the trainee reads 0.01 mL).
    assert withdrawn["params"]["difference_ml"] == pytest.approx(
        -fault["params"]["under_skin_ml"], abs=0.01
    )
    assert "pocket_fill" in withdrawn["params"]["causes"]
    assert "drowsiness" in _signs(report)  # the depot is absorbed


def test_faults_leave_the_pump_data_as_a_real_implant_would():
    kinked = run_fast(load_scenario("kinked_catheter"), time_compression=14400.0)
    assert not {"somnolence"} & _signs(kinked)
    assert all(a["source"] == "fault" for a in kinked["actions"])  # the pump did not complain
    reset = load_scenario("low_battery_reset")
    report = run_fast(reset, script=reset.model_answer[:1])
    assert report["timeline"][-1]["effect"] < 0.3  # 10 µg/day after the reset
    assert report["missed"] == ["assess", "restore", "acknowledge", "replace"]


def test_screening_trial_50_does_not_relax_enough_and_75_does():
    scenario = load_scenario("screening_trial")
    report = run_fast(scenario, script=scenario.model_answer)
    baseline = MAS_LEVELS_INDEX[report["timeline"][0]["mas"]]

    def best_drop(start_h: float, end_h: float) -> int:
        window = [e for e in report["timeline"] if start_h <= e["at_h"] <= end_h]
        return baseline - min(MAS_LEVELS_INDEX[e["mas"]] for e in window)

    needed = scenario.patient.screening.responder_mas_drop
    assert 0 < best_drop(0, 12) < needed  # 50 µg: some relaxation, not a response
    assert best_drop(24, 36) >= needed  # 75 µg: a responder
    assert report["timeline"][0]["signs"] == []


def test_debrief_csv_holds_the_patient_actions_and_checklist():
    scenario = load_scenario("routine_refill")
    report = run_fast(scenario, script=scenario.model_answer[:3], trainee="Sam")
    rows = list(csv.reader(io.StringIO(debrief_csv(report))))
    assert rows[0][:2] == ["scenario", "routine_refill"] and rows[1] == ["trainee", "Sam"]
    assert rows[2][:3] == ["score", str(report["points"]), str(report["max_points"])]
    body = rows[4:]
    kinds = {row[1] for row in body}
    assert {"patient", "trainee", "expected"} <= kinds
    missed = [row for row in body if row[1] == "expected" and row[-1].startswith("missed")]
    assert {row[2] for row in missed} == set(report["missed"])
    hours = [float(row[0]) for row in body if row[0]]
    assert hours == sorted(hours)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"duration_h": 0}, "duration_h: Input should be greater than 0"),
        ({"expected": []}, "expected: List should have at least 1 item"),
        ({"events": [{"id": "x", "at_h": 1, "when": "sign", "value": "fever"}]}, "exactly one"),
        ({"events": [{"id": "x", "at_h": 1, "fault": "gremlins"}]}, "events.0.fault"),
        (
            {
                "events": [
                    {
                        "id": "x",
                        "at_h": 1,
                        "fault": "intermittent_stall",
                        "params": {"period_h": 0, "stalled_h": 1},
                    }
                ]
            },
            "period_h must be a number from 0.1 to 240",
        ),
        (
            {"events": [{"id": "x", "at_h": 1, "fault": "pocket_fill", "params": {"volume": 1}}]},
            "unknown parameter 'volume'; allowed fraction",
        ),
        (
            {"events": [{"id": "x", "at_h": 1, "fault": "access_port_injection"}]},
            "parameter volume_ml is required",
        ),
        ({"program": {"drug": "baclofen", "mode": "continuous"}}, "program"),
        ({"patient": {"sensitivity": 0}}, "patient.sensitivity"),
    ],
)
def test_invalid_scenarios_are_named(change, message):
    base = {
        "title": "t",
        "duration_h": 2,
        "program": {"drug": "baclofen", "concentration_ug_per_ml": 500, "mode": "stopped"},
        "expected": [{"id": "a", "action": "assess_patient", "description": "assess"}],
    }
    parse_scenario(base)  # the base is valid
    with pytest.raises(InputError, match=message):
        parse_scenario({**base, **change})
    with pytest.raises(InputError, match="after 'nothing' is neither"):
        parse_scenario({**base, "expected": [{**base["expected"][0], "after": "nothing"}]})
    with pytest.raises(InputError, match="shipped: "):
        load_scenario("no_such_scenario")


def _fault_scenario(fault: str, params: dict, at_h: float = 1.0, dose: float = 300) -> dict:
    return {
        "title": f"{fault} on its own",
        "duration_h": 8.0,
        "patient": {"adapted_ug_per_day": dose},
        "program": {"drug": "baclofen", "concentration_ug_per_ml": 500, "mode": "continuous",
                    "dose_ug_per_day": dose},
        "pump": {"reservoir_ml": 10.0},
        "events": [{"id": "fault", "at_h": at_h, "fault": fault, "params": params}],
        "expected": [{"id": "a", "action": "assess_patient", "description": "assess"}],
    }  # fmt: skip


def _effect_at(report: dict, at_h: float) -> float:
    return min(report["timeline"], key=lambda e: abs(e["at_h"] - at_h))["effect"]


@pytest.mark.parametrize(
    ("fault", "params", "check"),
    [
        ("access_port_injection", {"volume_ml": 2.0, "concentration_ug_per_ml": 2000},
         lambda r: _effect_at(r, 5) > 8 and "coma" in _signs(r)),
        ("catheter_disconnection", {},
         lambda r: _effect_at(r, 8) < 0.6 and r["timeline"][-1]["depot_ug"] > 50),
        ("ug_per_hour_error", {},
         lambda r: _effect_at(r, 8) > 4 and "respiratory_depression" in _signs(r)),
        ("unfinished_programming", {},
         lambda r: _effect_at(r, 8) < 0.6 and "rebound_spasticity" in _signs(r)),
        ("mri_stall", {"recovery_h": 3.0},
         lambda r: [a["action"] for a in r["actions"]] == ["mri_stall", "motor_stall",
                                                           "stall_recovery"]),
        ("intermittent_stall", {"period_h": 2.0, "stalled_h": 0.5},
         lambda r: [a["action"] for a in r["actions"]].count("motor_stall") >= 3),
    ],
)  # fmt: skip
def test_each_clinical_fault_acts_on_the_patient_or_the_pump(fault, params, check):
    dose = 60 if fault == "ug_per_hour_error" else 300  # 60 µg/h for 60 µg/day (ISMP)
    report = run_fast(parse_scenario(_fault_scenario(fault, params, dose=dose)))
    assert report["actions"][0]["action"] == fault
    assert check(report), report["timeline"][-1]


def test_hard_limit_refuses_a_ug_per_hour_error_above_it():
    report = run_fast(parse_scenario(_fault_scenario("ug_per_hour_error", {})))
    assert "above the hard limit" in report["actions"][0]["params"]["refused"]
    assert _effect_at(report, 8) == pytest.approx(1.0, abs=0.05)


def test_wrong_concentration_reaches_the_patient_after_the_catheter():
    data = _fault_scenario("wrong_concentration", {"concentration_ug_per_ml": 2000}, at_h=0.5)
    data["duration_h"] = 24
    refill = [
        {"at_h": 1.0, "action": "stop"},
        {"at_h": 1.1, "action": "refill_withdrawn"},
        {"at_h": 1.2, "action": "refill_fill",
         "params": {"volume_ml": 20.0, "concentration_ug_per_ml": 500.0}},
        {"at_h": 1.3, "action": "start"},
    ]  # fmt: skip
    report = run_fast(parse_scenario({**data, "model_answer": refill}), script=parse_scenario(
        {**data, "model_answer": refill}).model_answer)  # fmt: skip
    assert _effect_at(report, 1.5) == pytest.approx(1.0, abs=0.1)  # old drug still in the line
    assert _effect_at(report, 24) > 3.0  # four times the dose once it arrives
    assert "somnolence" in _signs(report)


def test_triggers_refill_filled_effect_and_action_and_a_pocket_fill_during_the_refill():
    data = _fault_scenario("pocket_fill", {"fraction": 0.5})
    data["duration_h"] = 8.0
    data["events"] = [
        {"id": "missed_port", "when": "refill_filled", "fault": "pocket_fill",
         "params": {"fraction": 0.5}},
        {"id": "drowsy", "when": "effect_above", "value": 1.15, "message": "drowsy"},
        {"id": "assessed", "when": "action", "value": "assess_patient", "message": "noted"},
    ]  # fmt: skip
    data["expected"] = [
        {"id": "check", "action": "refill_withdrawn", "description": "aspirate again",
         "after": "drowsy", "within_h": 4, "match": {"significant": True}},
    ]  # fmt: skip
    data["model_answer"] = [
        {"at_h": 0.3, "action": "stop"},
        {"at_h": 0.4, "action": "refill_withdrawn"},
        {"at_h": 0.5, "action": "refill_fill",
         "params": {"volume_ml": 20.0, "concentration_ug_per_ml": 500.0}},
        {"at_h": 0.6, "action": "start"},
        {"at_h": 1.0, "action": "assess_patient"},
        {"at_h": 7.0, "action": "stop"},
        {"at_h": 7.1, "action": "refill_withdrawn"},
    ]  # fmt: skip
    scenario = parse_scenario(data)
    report = run_fast(scenario, script=scenario.model_answer)
    fired = report["events_fired"]
    assert 0.5 <= fired["missed_port"] < fired["assessed"] < fired["drowsy"] < 7.0
    pocket = next(a for a in report["actions"] if a["action"] == "pocket_fill")
    assert pocket["params"]["under_skin_ml"] == pytest.approx(10.0, abs=0.05)
    second = [a for a in report["actions"] if a["action"] == "refill_withdrawn"][1]
    # Exactly what went under the skin is missing at the next aspiration (to the 0.01 mL read).
    assert second["params"]["difference_ml"] == pytest.approx(-10.0, abs=0.02)
    assert "pocket_fill" in second["params"]["causes"]
    assert report["mastery"] is True


def test_debrief_pdf_from_the_command_line_has_the_checklist_and_the_curves(tmp_path, capsys):
    import re

    from rig.cli import main
    from rig.service.debrief_pdf import checklist_lines

    pdf, csv_path = tmp_path / "debrief.pdf", tmp_path / "debrief.csv"
    argv = ["scenario", "run", "kinked_catheter", "--fast", "--json"]
    assert main([*argv, "--pdf", str(pdf), "--csv", str(csv_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b(?!s)", data)) == 2
    assert csv_path.read_text(encoding="utf-8").startswith("scenario,kinked_catheter")
    lines = checklist_lines(report)  # no trainee: what was due is missed, never done
    assert len(lines) == len(report["items"]) and any("MISSED" in line for line in lines)
    assert not any("done at" in line for line in lines)
    assert main([*argv[:3], "--pdf", str(pdf)]) == 2  # on the service the trainee acts
    assert "--pdf" in capsys.readouterr().err
