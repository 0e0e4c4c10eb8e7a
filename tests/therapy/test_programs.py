"""Program files: every mode parses, every kind of bad input is rejected with field and range."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from rig.common.inputs import InputError
from rig.therapy.drugs import (
    DEFAULT_DRUG_LIBRARY,
    check_program,
    load_drug_library,
    load_program,
    parse_program,
)
from rig.therapy.programs import Program

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "programs"
MODES = {
    "continuous.toml": "continuous",
    "stopped.toml": "stopped",
    "flex.toml": "flex",
    "single_bolus.toml": "single_bolus",
    "periodic_bolus.toml": "periodic_bolus",
    "priming_bolus.toml": "priming_bolus",
    "bridge_bolus.toml": "bridge_bolus",
    "patient_bolus.toml": "continuous",
}
BASE = {"drug": "baclofen", "concentration_ug_per_ml": 500}


def _program(**fields):
    return {**BASE, **fields}


@pytest.mark.parametrize(("name", "mode"), MODES.items())
def test_every_example_loads_and_round_trips_through_json(name, mode):
    program = load_program(EXAMPLES / name)
    assert program.mode == mode
    again = Program.model_validate_json(program.model_dump_json())
    assert again == program
    assert Program.model_validate(json.loads(program.model_dump_json())) == program


def test_every_program_in_the_readme_is_valid():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    modes = set()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        data = tomllib.loads(block)
        if "mode" in data:
            modes.add(parse_program(data, "docs").mode)
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        parse_program(json.loads(block), "docs")
    assert modes == set(MODES.values())


def test_json_schema_lists_every_mode():
    schema = Program.model_json_schema()
    text = json.dumps(schema)
    for mode in set(MODES.values()):
        assert f'"{mode}"' in text
    assert schema["discriminator"]["propertyName"] == "mode"


def test_continuous_daily_total():
    program = parse_program(_program(mode="continuous", dose_ug_per_day=300))
    assert program.max_daily_total_ug() == 300


def test_flex_daily_total_by_weekday():
    program = load_program(EXAMPLES / "flex.toml")
    totals = program.daily_totals_ug()
    # 240 µg/day for 7 h, 400 for 12 h, 240 for 5 h
    assert totals["mon"] == pytest.approx(240 * 7 / 24 + 400 * 12 / 24 + 240 * 5 / 24)
    assert totals["mon"] == pytest.approx(320)
    assert totals["sat"] == totals["sun"] == 300
    assert program.max_daily_total_ug() == pytest.approx(320)


def test_periodic_bolus_every_6_h_from_02_00():
    program = load_program(EXAMPLES / "periodic_bolus.toml")
    assert program.root.bolus_starts_min() == [120, 480, 840, 1200]
    assert program.max_daily_total_ug() == pytest.approx(200 + 4 * 25)


def test_periodic_bolus_at_times():
    program = parse_program(
        _program(
            mode="periodic_bolus",
            background_dose_ug_per_day=0,
            bolus_dose_ug=40,
            bolus_duration_min=20,
            times=["06:00", "18:00"],
        )
    )
    assert program.root.bolus_starts_min() == [360, 1080]
    assert program.max_daily_total_ug() == 80


def test_priming_volume_from_catheter():
    program = load_program(EXAMPLES / "priming_bolus.toml")
    assert program.root.catheter.volume_ul == pytest.approx(45 * 2.2 + 60)
    assert program.main_therapy.mode == "continuous"


@pytest.mark.parametrize(
    ("rate_ul_per_h", "needle"),
    [
        (1e-9, "rate_ul_per_h: Input should be greater than or equal to 1"),
        (0.5, "rate_ul_per_h: Input should be greater than or equal to 1"),
        (5.0, "would take 32 h: allowed at most 24 h (a rate of at least 7 µL/h"),
    ],
)
def test_a_priming_rate_the_drive_cannot_resolve_or_days_long_is_refused(rate_ul_per_h, needle):
    program = tomllib.loads((EXAMPLES / "priming_bolus.toml").read_text())  # 159 µL
    with pytest.raises(InputError, match=re.escape(needle)):
        parse_program(program | {"rate_ul_per_h": rate_ul_per_h})
    assert parse_program(program | {"rate_ul_per_h": 7.0}).root.rate_ul_per_h == 7.0


def test_schema_states_the_time_of_day_rule_and_whole_number_counts():
    schema = json.dumps(Program.model_json_schema())
    assert "^([01][0-9]|2[0-3]):[0-5][0-9]$" in schema.replace("\\\\", "\\")
    block = {"dose_ug": 25, "duration_min": 10, "lockout_min": 180, "max_per_24h": 4.0}
    program = parse_program(_program(mode="continuous", dose_ug_per_day=300, patient_bolus=block))
    assert program.patient_bolus.max_per_24h == 4


def test_bridge_keeps_following_program():
    program = load_program(EXAMPLES / "bridge_bolus.toml")
    assert program.main_therapy.dose_ug_per_day == 300
    assert program.max_daily_total_ug() == 300


def test_patient_bolus_block_in_following_program():
    program = parse_program(
        _program(
            mode="priming_bolus",
            rate_ul_per_h=500,
            catheter={"length_cm": 40, "ul_per_cm": 2, "pump_tubing_ul": 0},
            then={
                "mode": "continuous",
                "dose_ug_per_day": 300,
                "patient_bolus": {
                    "dose_ug": 20,
                    "duration_min": 5,
                    "lockout_min": 60,
                    "max_per_24h": 6,
                },
            },
        )
    )
    assert program.patient_bolus is not None
    assert program.patient_bolus.max_per_24h == 6


STEPS_13 = [{"start": f"{h:02d}:00", "dose_ug_per_day": 300} for h in range(13)]
CATHETER = {"length_cm": 40, "ul_per_cm": 2, "pump_tubing_ul": 0}
PATIENT = {"dose_ug": 20, "duration_min": 5, "lockout_min": 60, "max_per_24h": 6}

BAD = {
    "string dose": (_program(mode="continuous", dose_ug_per_day="300"), "dose_ug_per_day"),
    "bool dose": (_program(mode="continuous", dose_ug_per_day=True), "dose_ug_per_day"),
    "nan dose": (_program(mode="continuous", dose_ug_per_day=float("nan")), "finite"),
    "inf dose": (_program(mode="continuous", dose_ug_per_day=float("inf")), "finite"),
    "zero dose": (_program(mode="continuous", dose_ug_per_day=0), "greater than or equal to 0.1"),
    "negative dose": (
        _program(mode="continuous", dose_ug_per_day=-5),
        "greater than or equal to 0.1",
    ),
    "missing dose": (_program(mode="continuous"), "dose_ug_per_day: required"),
    "zero concentration": (
        {"mode": "continuous", "concentration_ug_per_ml": 0, "dose_ug_per_day": 300},
        "concentration_ug_per_ml",
    ),
    "unknown drug": (
        _program(drug="morphine", mode="continuous", dose_ug_per_day=300),
        "drug: unknown drug 'morphine'; allowed: baclofen",
    ),
    "unknown concentration": (
        {"mode": "continuous", "concentration_ug_per_ml": 750, "dose_ug_per_day": 300},
        "allowed: 50, 500, 1000, 2000",
    ),
    "unknown mode": (_program(mode="turbo"), "'turbo'"),
    "missing mode": (BASE, "mode"),
    "unknown key": (_program(mode="continuous", dose_ug_per_day=300, rate=1), "unknown key"),
    "hard daily limit": (
        _program(mode="continuous", dose_ug_per_day=2500),
        "allowed up to 2000 µg/day",
    ),
    "14 flex steps": (
        _program(mode="flex", steps=[*STEPS_13, {"start": "20:00", "dose_ug_per_day": 300}]),
        "at most 13",
    ),
    "flex duplicate start": (
        _program(
            mode="flex",
            steps=[
                {"start": "00:00", "dose_ug_per_day": 300},
                {"start": "08:00", "dose_ug_per_day": 300},
                {"start": "08:00", "dose_ug_per_day": 400},
            ],
        ),
        "ascending time order",
    ),
    "flex out of order": (
        _program(
            mode="flex",
            steps=[
                {"start": "00:00", "dose_ug_per_day": 300},
                {"start": "12:00", "dose_ug_per_day": 300},
                {"start": "08:00", "dose_ug_per_day": 400},
            ],
        ),
        "ascending time order",
    ),
    "flex not from midnight": (
        _program(mode="flex", steps=[{"start": "06:00", "dose_ug_per_day": 300}]),
        "must start at 00:00",
    ),
    "flex time 24:00": (
        _program(
            mode="flex",
            steps=[
                {"start": "00:00", "dose_ug_per_day": 300},
                {"start": "24:00", "dose_ug_per_day": 300},
            ],
        ),
        "00:00 to 23:59",
    ),
    "flex weekday unknown": (
        _program(
            mode="flex",
            steps=[{"start": "00:00", "dose_ug_per_day": 300}],
            weekdays={"funday": [{"start": "00:00", "dose_ug_per_day": 300}]},
        ),
        "weekdays.funday",
    ),
    "flex weekday over hard limit": (
        _program(
            mode="flex",
            steps=[{"start": "00:00", "dose_ug_per_day": 300}],
            weekdays={"sat": [{"start": "00:00", "dose_ug_per_day": 2100}]},
        ),
        "weekdays.sat: daily dose 2100",
    ),
    "single bolus over bolus hard limit": (
        _program(mode="single_bolus", dose_ug=250, duration_min=30),
        "dose_ug: bolus 250 µg is above the hard limit; allowed up to 200 µg",
    ),
    "bolus duration zero": (
        _program(mode="single_bolus", dose_ug=50, duration_min=0),
        "duration_min",
    ),
    "periodic both schedules": (
        _program(
            mode="periodic_bolus",
            background_dose_ug_per_day=100,
            bolus_dose_ug=20,
            bolus_duration_min=10,
            times=["06:00"],
            every_h=6,
        ),
        "exactly one of times",
    ),
    "periodic every 5 h": (
        _program(
            mode="periodic_bolus",
            background_dose_ug_per_day=100,
            bolus_dose_ug=20,
            bolus_duration_min=10,
            every_h=5,
        ),
        "every_h",
    ),
    "periodic overlapping boluses": (
        _program(
            mode="periodic_bolus",
            background_dose_ug_per_day=100,
            bolus_dose_ug=20,
            bolus_duration_min=90,
            times=["06:00", "07:00"],
        ),
        "overlaps the next bolus",
    ),
    "periodic time 12:75": (
        _program(
            mode="periodic_bolus",
            background_dose_ug_per_day=100,
            bolus_dose_ug=20,
            bolus_duration_min=10,
            times=["12:75"],
        ),
        "00:00 to 23:59",
    ),
    "patient lockout shorter than bolus": (
        _program(
            mode="continuous",
            dose_ug_per_day=300,
            patient_bolus={**PATIENT, "lockout_min": 2},
        ),
        "lockout_min",
    ),
    "patient max zero": (
        _program(
            mode="continuous", dose_ug_per_day=300, patient_bolus={**PATIENT, "max_per_24h": 0}
        ),
        "max_per_24h",
    ),
    "patient bolus on single bolus": (
        _program(mode="single_bolus", dose_ug=50, duration_min=30, patient_bolus=PATIENT),
        "unknown key",
    ),
    "bridge unknown old concentration": (
        _program(
            mode="bridge_bolus",
            old_concentration_ug_per_ml=300,
            old_dose_ug_per_day=300,
            catheter=CATHETER,
            then={"mode": "continuous", "dose_ug_per_day": 300},
        ),
        "old_concentration_ug_per_ml: 300 µg/mL",
    ),
    "bridge then priming": (
        _program(
            mode="bridge_bolus",
            old_concentration_ug_per_ml=500,
            old_dose_ug_per_day=300,
            catheter=CATHETER,
            then={"mode": "priming_bolus"},
        ),
        "then",
    ),
    "not a table": ([1, 2], "(top level)"),
}


@pytest.mark.parametrize(("data", "needle"), BAD.values(), ids=BAD.keys())
def test_bad_program_rejected_naming_field(data, needle):
    with pytest.raises(InputError) as caught:
        parse_program(data, "prog.toml")
    message = str(caught.value)
    assert needle in message
    assert all(line.startswith("prog.toml: ") for line in message.splitlines())


def test_every_problem_reported_one_line_each():
    data = _program(mode="single_bolus", dose_ug=-1, duration_min=float("nan"))
    with pytest.raises(InputError) as caught:
        parse_program(data, "p")
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert any("dose_ug" in line for line in lines)
    assert any("duration_min" in line for line in lines)


def test_soft_limits_are_warnings_not_errors():
    program = parse_program(
        _program(
            mode="continuous",
            dose_ug_per_day=900,
            patient_bolus={
                "dose_ug": 120,
                "duration_min": 10,
                "lockout_min": 60,
                "max_per_24h": 12,
            },
        )
    )
    warnings = check_program(program)
    codes = {warning.code for warning in warnings}
    assert codes == {"daily_soft_limit", "bolus_soft_limit", "patient_bolus_hard_limit"}
    assert all(warning.message for warning in warnings)


def test_one_shot_bolus_larger_than_the_reservoir_contents_rejected():
    program = parse_program(
        {"mode": "single_bolus", "concentration_ug_per_ml": 50, "dose_ug": 100, "duration_min": 60}
    )  # 2 mL
    check_program(program, capacity_ml=20, volume_ml=2.5)
    with pytest.raises(
        InputError, match=r"larger than the volume in the reservoir; allowed up to 1\.5"
    ):
        check_program(program, capacity_ml=20, volume_ml=1.5, source="p")
    priming = load_program(EXAMPLES / "priming_bolus.toml")  # 159 µL
    with pytest.raises(InputError, match=r"p: catheter: bolus volume 0\.159 mL"):
        check_program(priming, volume_ml=0.1, source="p")


def test_repeated_boluses_checked_against_capacity_only():
    program = load_program(EXAMPLES / "patient_bolus.toml")  # 25 µg = 0.05 mL per bolus
    check_program(program, capacity_ml=20, volume_ml=0.01)
    library = DEFAULT_DRUG_LIBRARY.updated(
        {"drugs": {"baclofen": {"bolus_soft_limit_ug": 20_000, "bolus_hard_limit_ug": 20_000}}}
    )
    big = parse_program(
        _program(
            mode="continuous", dose_ug_per_day=300, patient_bolus={**PATIENT, "dose_ug": 10_500}
        ),
        library=library,
    )  # 21 mL per bolus
    check_program(big, library, capacity_ml=40)
    with pytest.raises(InputError, match="larger than the reservoir capacity; allowed up to 20 mL"):
        check_program(big, library, capacity_ml=20)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="cannot read program file"):
        load_program(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = \n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid TOML"):
        load_program(broken)


def test_drug_library_override_and_file(tmp_path):
    stricter = DEFAULT_DRUG_LIBRARY.updated(
        {"drugs": {"baclofen": {"daily_hard_limit_ug_per_day": 1000}}}
    )
    assert stricter.drugs["baclofen"].daily_hard_limit_ug_per_day == 1000
    assert stricter.drugs["baclofen"].daily_soft_limit_ug_per_day == 800
    with pytest.raises(InputError, match="allowed up to 1000"):
        parse_program(_program(mode="continuous", dose_ug_per_day=1200), library=stricter)
    with pytest.raises(InputError, match="must not exceed"):
        DEFAULT_DRUG_LIBRARY.updated({"drugs": {"baclofen": {"daily_soft_limit_ug_per_day": 3000}}})
    path = tmp_path / "drugs.toml"
    path.write_text(
        "[drugs.testdrug]\nconcentrations_ug_per_ml = [100]\ndaily_soft_limit_ug_per_day = 10\n"
        "daily_hard_limit_ug_per_day = 20\nbolus_soft_limit_ug = 5\nbolus_hard_limit_ug = 5\n",
        encoding="utf-8",
    )
    library = load_drug_library(path)
    program = parse_program(
        {
            "drug": "testdrug",
            "concentration_ug_per_ml": 100,
            "mode": "continuous",
            "dose_ug_per_day": 15,
        },
        library=library,
    )
    assert [w.code for w in check_program(program, library)] == ["daily_soft_limit"]
