"""``itbrig simulate``: exit codes, JSON fields and hand-worked results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"


def _run_json(capsys, *args):
    code = main(["simulate", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_continuous_worked_example(capsys):
    result = _run_json(capsys, str(EXAMPLES / "continuous.toml"), "--days", "40")
    assert result["delivered_ml"] == pytest.approx(20.0)
    assert result["delivered_ug"] == pytest.approx(10_000.0)
    assert result["reservoir_end_ml"] == pytest.approx(0.0)
    assert result["hours_to_low_reservoir"] == pytest.approx(720.0)
    assert result["hours_to_empty"] == pytest.approx(800.0)
    assert result["alarms"] == [
        {"code": "low_reservoir", "priority": "medium", "at_h": pytest.approx(720.0)},
        {"code": "empty_reservoir", "priority": "high", "at_h": pytest.approx(800.0)},
    ]
    assert result["patient_boluses"]["granted"] == 0


def test_short_run_reaches_nothing(capsys):
    result = _run_json(capsys, str(EXAMPLES / "continuous.toml"), "--days", "10")
    assert result["delivered_ml"] == pytest.approx(6.0)
    assert result["reservoir_end_ml"] == pytest.approx(14.0)
    assert result["hours_to_low_reservoir"] is None
    assert result["hours_to_empty"] is None
    assert result["alarms"] == []


def test_patient_boluses_counted(capsys, tmp_path):
    requests = tmp_path / "requests.toml"
    requests.write_text('daily = ["08:00", "09:00", "12:00"]\nat_h = [0.5]\n', encoding="utf-8")
    result = _run_json(
        capsys,
        str(EXAMPLES / "patient_bolus.toml"),
        "--days",
        "2",
        "--bolus-requests",
        str(requests),
    )
    # per day: 08:00 granted, 09:00 lockout (180 min), 12:00 granted; plus 00:30 on day one
    assert result["patient_boluses"] == {
        "granted": 5,
        "denied": 2,
        "denied_by_reason": {"lockout": 2},
    }
    # 2 days of 300 µg/day plus 5 boluses of 25 µg at 500 µg/mL
    assert result["delivered_ug"] == pytest.approx(600 + 125)
    assert result["delivered_ml"] == pytest.approx(1.2 + 0.25)


def test_example_bolus_requests_file_and_other_options(capsys):
    result = _run_json(
        capsys,
        str(EXAMPLES / "flex.toml"),
        "--days",
        "30",
        "--bolus-requests",
        str(EXAMPLES / "bolus_requests.toml"),
        "--reservoir-ml",
        "10",
        "--capacity-ml",
        "40",
        "--low-threshold-ml",
        "4",
        "--start",
        "2025-01-06T00:00",
    )
    # 6 mL to the low alarm: one week 4.4 mL, then Monday 0.64 + Tuesday 0.64 mL = 5.68 mL,
    # 0.32 mL left on Wednesday: 0.14 mL to 07:00, then 0.18 mL at 0.8 mL/day = 5.4 h
    assert result["hours_to_low_reservoir"] == pytest.approx(9 * 24 + 12.4)
    # flex.toml has no patient bolus: 5 requests a day for 30 days plus one at 0.5 h
    assert result["patient_boluses"] == {
        "granted": 0,
        "denied": 151,
        "denied_by_reason": {"not_available": 151},
    }


def test_battery_alarms_in_simulation(capsys):
    result = _run_json(
        capsys,
        str(EXAMPLES / "stopped.toml"),
        "--days",
        "100",
        "--battery-age-days",
        "2000",
        "--eri-age-days",
        "2010",
    )
    assert [(a["code"], a["at_h"]) for a in result["alarms"]] == [
        ("eri", pytest.approx(240.0)),
        ("end_of_service", pytest.approx(240.0 + 90 * 24)),
    ]


def test_soft_limit_warnings_reported(capsys, tmp_path):
    program = tmp_path / "high.toml"
    program.write_text(
        'concentration_ug_per_ml = 1000\nmode = "continuous"\ndose_ug_per_day = 900\n',
        encoding="utf-8",
    )
    result = _run_json(capsys, str(program), "--days", "1")
    assert [w["code"] for w in result["warnings"]] == ["daily_soft_limit"]
    assert result["delivered_ug"] == pytest.approx(900)


def test_text_output(capsys):
    assert main(["simulate", str(EXAMPLES / "continuous.toml"), "--days", "40"]) == 0
    out = capsys.readouterr().out
    assert "300 µg/day = 0.600 mL/day = 25.00 µL/h" in out
    assert "low reservoir  720.0 h (30.0 days)" in out
    assert "empty_reservoir" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--days", "0"], "days"),
        (["--days", "-3"], "days"),
        (["--days", "nan"], "days"),
        (["--days", "inf"], "days"),
        (["--days", "5000"], "days"),
        (["--days", "10", "--capacity-ml", "30"], "capacity_ml"),
        (["--days", "10", "--reservoir-ml", "25"], "reservoir_ml"),
        (["--days", "10", "--reservoir-ml", "-1"], "reservoir_ml"),
        (["--days", "10", "--low-threshold-ml", "20"], "low_threshold_ml"),
        (["--days", "10", "--start", "yesterday"], "--start"),
        (["--days", "10", "--battery-age-days", "-1"], "battery_age_days"),
    ],
)
def test_bad_options_exit_2(capsys, args, needle):
    assert main(["simulate", str(EXAMPLES / "continuous.toml"), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.startswith("error: ")


def test_unparseable_number_exits_2(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["simulate", str(EXAMPLES / "continuous.toml"), "--days", "lots"])
    assert caught.value.code == 2
    assert "--days" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            'mode = "continuous"\nconcentration_ug_per_ml = 500\ndose_ug_per_day = -1\n',
            "greater than or equal to 0.1",
        ),
        ('mode = "warp"\nconcentration_ug_per_ml = 500\n', "warp"),
        ('mode = "continuous"\nconcentration_ug_per_ml = 600\ndose_ug_per_day = 300\n', "600"),
        ('mode = "continuous"\nconcentration_ug_per_ml = 500\ndose_ug_per_day = nan\n', "finite"),
        ("mode = [\n", "not valid TOML"),
    ],
)
def test_bad_program_file_exits_2(capsys, tmp_path, content, needle):
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    assert main(["simulate", str(path), "--days", "1"]) == 2
    assert needle in capsys.readouterr().err


def test_one_shot_larger_than_reservoir_exits_2(capsys):
    args = [str(EXAMPLES / "single_bolus.toml"), "--days", "1", "--reservoir-ml", "0.05"]
    assert main(["simulate", *args]) == 2
    assert "larger than the volume in the reservoir" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('daily = ["25:00"]\n', "00:00 to 23:59"),
        ("at_h = [-1]\n", "at_h.0"),
        ("nonsense = 1\n", "unknown key"),
    ],
)
def test_bad_bolus_request_file_exits_2(capsys, tmp_path, content, needle):
    path = tmp_path / "requests.toml"
    path.write_text(content, encoding="utf-8")
    program = str(EXAMPLES / "patient_bolus.toml")
    assert main(["simulate", program, "--days", "1", "--bolus-requests", str(path)]) == 2
    assert needle in capsys.readouterr().err


def test_missing_files_exit_2(capsys, tmp_path):
    assert main(["simulate", str(tmp_path / "none.toml"), "--days", "1"]) == 2
    assert "cannot read program file" in capsys.readouterr().err
    program = str(EXAMPLES / "continuous.toml")
    missing = str(tmp_path / "none.toml")
    assert main(["simulate", program, "--days", "1", "--bolus-requests", missing]) == 2
    assert "cannot read bolus-request file" in capsys.readouterr().err
