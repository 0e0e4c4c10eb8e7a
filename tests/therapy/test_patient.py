"""The patient model: timelines of ``itbrig simulate --patient`` for a bolus on a naive patient,
a new infusion, a reservoir that runs empty and an overdose; patient files checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.cli import main
from rig.common.inputs import InputError
from rig.therapy.patient import MAS_LEVELS, PatientModel, load_patient, parse_patient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"


def _timeline(capsys, tmp_path, program: Path, days: float, patient: str | None, *extra: str):
    args = ["simulate", str(program), "--days", str(days), "--json", "--patient"]
    if patient is not None:
        path = tmp_path / "patient.toml"
        path.write_text(patient, encoding="utf-8")
        args.append(str(path))
    code = main([*args, *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)["patient"]["timeline"]


def _program(tmp_path: Path, dose_ug_per_day: float) -> Path:
    path = tmp_path / "program.toml"
    path.write_text(
        'drug = "baclofen"\nconcentration_ug_per_ml = 500\nmode = "continuous"\n'
        f"dose_ug_per_day = {dose_ug_per_day}\n",
        encoding="utf-8",
    )
    return path


def _first_h(timeline: list[dict], sign: str) -> float:
    return next(entry["at_h"] for entry in timeline if sign in entry["signs"])


def test_single_bolus_on_a_naive_patient_peaks_near_four_hours(capsys, tmp_path):
    timeline = _timeline(
        capsys, tmp_path, EXAMPLES / "single_bolus.toml", 2, "adapted_ug_per_day = 0\n"
    )
    assert [entry["at_h"] for entry in timeline[:3]] == [0.0, 1.0, 2.0]  # hourly
    assert len(timeline) == 49
    effects = [entry["effect"] for entry in timeline]
    peak = max(effects)
    peak_h = timeline[effects.index(peak)]["at_h"]
    assert 3.0 <= peak_h <= 5.5
    assert timeline[0]["mas"] == "3" and timeline[0]["effect"] == 0.0
    assert effects[1] >= 0.2 * peak  # onset within the first hour
    assert MAS_LEVELS.index(timeline[int(peak_h)]["mas"]) <= MAS_LEVELS.index("1+")
    relieved_h = [e["at_h"] for e in timeline if e["effect"] >= 0.5 * peak]
    assert 4.0 <= relieved_h[-1] - relieved_h[0] <= 12.0
    assert effects[24] < 0.15 * peak and timeline[24]["mas"] == "3"
    assert all(entry["signs"] == [] for entry in timeline)  # 50 µg: no overdose, no withdrawal


def test_new_infusion_half_effect_in_6_to_10_h_nearly_all_by_48_h(capsys, tmp_path):
    patient = "adapted_ug_per_day = 0\nnaive_reference_ug_per_day = 200\n"
    timeline = _timeline(capsys, tmp_path, _program(tmp_path, 200), 3, patient)
    effects = [entry["effect"] for entry in timeline]
    final = effects[-1]
    assert final == pytest.approx(1.0, abs=0.01)  # normalised to the dose now given
    half_h = next(e["at_h"] for e in timeline if e["effect"] >= 0.5 * final)
    assert 6.0 <= half_h <= 10.0
    assert effects[24] >= 0.9 * final and effects[48] >= 0.98 * final
    assert timeline[-1]["mas"] == "1" and timeline[-1]["signs"] == []


def test_reservoir_running_empty_brings_withdrawal_over_days(capsys, tmp_path):
    # 1 mL at 0.6 mL/day: empty at 40 h; the patient is adapted to the program's 300 µg/day.
    timeline = _timeline(
        capsys, tmp_path, EXAMPLES / "continuous.toml", 6, None, "--reservoir-ml", "1"
    )
    before = [e for e in timeline if e["at_h"] <= 40]
    assert all(e["signs"] == [] and e["mas"] == "1" for e in before)
    empty_h = 40.0
    signs = ["pruritus", "rebound_spasticity", "fever", "tachycardia"]
    signs += ["altered_mental_state", "rhabdomyolysis"]
    first = {sign: _first_h(timeline, sign) - empty_h for sign in signs}
    assert 0 < first["pruritus"] <= 8
    assert first["pruritus"] < first["rebound_spasticity"] <= 12
    assert first["rebound_spasticity"] < first["fever"] <= 48
    assert first["fever"] < first["altered_mental_state"] < first["rhabdomyolysis"] <= 72
    worst = max(timeline, key=lambda e: e["vitals"]["heart_rate_per_min"])
    assert worst["vitals"]["heart_rate_per_min"] >= 110 and worst["vitals"]["temperature_c"] > 38.5
    assert "4" in {e["mas"] for e in timeline}
    assert not any("somnolence" in e["signs"] for e in timeline)


def test_several_times_the_adapted_dose_is_an_overdose(capsys, tmp_path):
    # 300 µg/day into a patient adapted to 30 µg/day: ten times the effect at steady state.
    timeline = _timeline(
        capsys, tmp_path, EXAMPLES / "continuous.toml", 2, "adapted_ug_per_day = 30\n"
    )
    first = {s: _first_h(timeline, s) for s in ("somnolence", "respiratory_depression", "coma")}
    assert 0 < first["somnolence"] < first["respiratory_depression"] < first["coma"] <= 24
    comatose = timeline[-1]
    assert comatose["vitals"]["consciousness"] == "unresponsive"
    assert comatose["vitals"]["breathing_rate_per_min"] < 8
    assert comatose["mas"] == "0"
    assert "pruritus" not in comatose["signs"]


def test_bridge_bolus_gives_the_old_drug_in_the_line_first(capsys, tmp_path):
    # 159 µL of 500 µg/mL at the old volume rate, then 1000 µg/mL at 300 µg/day: 300 µg a day.
    args = ["simulate", str(EXAMPLES / "bridge_bolus.toml"), "--days", "1", "--json", "--patient"]
    assert main(args) == 0
    patient = json.loads(capsys.readouterr().out)["patient"]
    assert patient["reached_ug"] == pytest.approx(300.0, abs=0.5)
    assert all(entry["signs"] == [] for entry in patient["timeline"])


def test_text_output_lists_the_changes_of_signs(capsys):
    code = main(["simulate", str(EXAMPLES / "continuous.toml"), "--days", "5", "--patient",
                 "--reservoir-ml", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "patient        adult, adapted to 300 µg/day" in out
    assert "pruritus" in out and "rhabdomyolysis" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sensitivty = 2\n", "sensitivty: unknown key"),
        ("adapted_ug_per_day = -5\n", "adapted_ug_per_day: Input should be greater than"),
        ('[spasticity]\nuntreated_mas = "5"\n', "spasticity.untreated_mas: Input should be"),
        ("[overdose]\nsomnolence = 9\n", "bands must rise"),
        ("[pharmacokinetics]\ncsf_half_life_h = 5.776\n", "must differ from the elimination"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_invalid_patient_files_are_named(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_patient(path)
    code = main(["simulate", str(EXAMPLES / "continuous.toml"), "--days", "1", "--patient",
                 str(path)])  # fmt: skip
    assert code == 2 and str(path) in capsys.readouterr().err


def test_shipped_patient_file_states_every_default():
    assert load_patient() == parse_patient({})


def test_sensitivity_scales_the_effect_and_depot_is_absorbed_slowly():
    params = parse_patient({"adapted_ug_per_day": 300})
    normal, sensitive = (
        PatientModel(params),
        PatientModel(params.model_copy(update={"sensitivity": 2.0})),
    )
    assert sensitive.effect == pytest.approx(2 * normal.effect)
    normal.add_depot(10_000)
    normal.advance(6.0, 75.0)  # the pump's dose plus half the depot absorbed
    assert normal.snapshot().depot_ug == pytest.approx(5_000, rel=1e-6)
    assert normal.reached_ug == pytest.approx(75.0 + 5_000 * 0.02)
