"""The Program wizard's draft builds programs of the service's one model, in every mode, and
reads a program in force back; totals and lead-in figures in clinical units. No Kivy, no
service."""

from __future__ import annotations

import pytest

from rig.client.format import settings_rows
from rig.therapy.programs import Program
from tests.service.conftest import program_json
from ui.wizard import EVERY, Draft, draft_from_program, home_program_text, keyed_time

BASE = {
    "concentration_ug_per_ml": 500.0,
    "dose_ug_per_day": 300.0,
    "background_dose_ug_per_day": 200.0,
    "bolus_dose_ug": 25.0,
    "bolus_duration_min": 30.0,
    "every_h": 6.0,
    "first_at": 530.0,
    "dose_ug": 50.0,
    "duration_min": 60.0,
    "pb_dose_ug": 25.0,
    "pb_duration_min": 10.0,
    "pb_lockout_min": 180.0,
    "pb_max_per_24h": 4.0,
    "length_cm": 45.0,
    "ul_per_cm": 2.2,
    "pump_tubing_ul": 60.0,
    "rate_ul_per_h": 1000.0,
    "old_concentration_ug_per_ml": 500.0,
    "old_dose_ug_per_day": 300.0,
}
FLEX = {EVERY: [(0, 240.0), (420, 400.0), (1140, 240.0)], "sat": [(0, 300.0)]}


@pytest.mark.parametrize("lead_in", [None, "priming", "bridge"])
@pytest.mark.parametrize(
    "mode", ["continuous", "flex", "periodic_bolus", "single_bolus", "stopped"]
)
def test_every_mode_builds_a_program_the_service_takes(mode, lead_in):
    draft = Draft(mode, dict(BASE), dict(FLEX), patient_bolus=True, lead_in=lead_in)
    program = Program.model_validate(draft.payload())
    assert program.mode == (f"{lead_in}_bolus" if lead_in else mode)
    main = program.main_therapy
    assert main.mode == mode
    has_block = mode in ("continuous", "flex", "periodic_bolus")
    assert (getattr(main, "patient_bolus", None) is not None) == has_block
    again = draft_from_program(program.model_dump(mode="json"))  # the wizard's next draft
    assert again.lead_in is None and again.main_program() == draft.main_program()


def test_a_periodic_program_with_bolus_times_keeps_them():
    program = {
        **program_json("periodic_bolus"),
        "every_h": None,
        "first_at": "00:00",
        "times": ["06:00", "18:00"],
    }
    draft = draft_from_program(Program.model_validate(program).model_dump(mode="json"))
    assert draft.main_program()["times"] == ["06:00", "18:00"]
    assert "Daily total 250.0 µg/day" in draft.summary()  # 200 + 2 × 25
    Program.model_validate(draft.payload())


def test_live_totals_and_lead_in_figures_in_clinical_units():
    flex = Draft("flex", dict(BASE), dict(FLEX))
    assert flex.summary().startswith("3 steps · Daily total 320.0 µg/day = 0.640 mL/day")
    assert "(Sat 300.0)" in flex.summary()
    periodic = Draft("periodic_bolus", dict(BASE))
    assert (
        "Daily total 300.0 µg/day = 0.600 mL/day = 25.00 µL/h  (background 200.0 + 4 × 25.0 µg)"
        in (periodic.summary())
    )
    bridge = Draft("continuous", dict(BASE), lead_in="bridge")
    assert bridge.summary().startswith(
        "Bridge (old 500 µg/mL in the line): 159 µL at 25.00 µL/h for 6 h 22 min, then:"
    )
    missing = Draft("continuous", {**BASE, "dose_ug_per_day": None})
    assert missing.summary() == "Daily total: enter every value"


def test_finish_rows_name_every_change_once():
    old = program_json("continuous")
    new = Draft("flex", dict(BASE), dict(FLEX), patient_bolus=True, lead_in="bridge").payload()
    rows = settings_rows({}, {}, old_program=old, new_program=new)
    labels = [label for label, _old, _new in rows]
    assert len(labels) == len(set(labels))
    assert labels.index("Bridge duration") < labels.index("Drug")  # the lead-in first
    shown = {label: (before, after) for label, before, after in rows}
    assert shown["Flex step 2"] == ("—", "from 07:00  400.0 µg/day")
    assert shown["Sat step 1"] == ("—", "from 00:00  300.0 µg/day")
    assert shown["Bridge rate"] == ("—", "25.00 µL/h")
    assert shown["Bridge duration"] == ("—", "6 h 22 min")


def test_home_shows_the_flex_step_in_force_and_a_pending_bridge():
    program = Program.model_validate(Draft("flex", dict(BASE), dict(FLEX)).payload())
    status = {
        "patient_time": "2026-01-06T08:15:00Z",  # a Tuesday
        "therapy": {"program": program.model_dump(mode="json"), "phase": "basal"},
        "refill": {
            "bridge_pending": {
                "old_concentration_ug_per_ml": 500.0,
                "new_concentration_ug_per_ml": 1000.0,
            }
        },
    }
    text = home_program_text(status)
    assert "Refilled at 1,000 µg/mL (program 500 µg/mL)" in text
    assert "Flex step 2 of 3 now: [b]400.0 µg/day[/b] since 07:00" in text
    status["patient_time"] = "2026-01-10T08:15:00Z"  # Saturday: its own schedule
    assert "Flex step 1 of 1 now: [b]300.0 µg/day[/b]" in home_program_text(status)


@pytest.mark.parametrize(
    ("typed", "minutes"), [(0, 0), (630, 390), (2359, 1439), (2400, None), (675, None)]
)
def test_a_time_of_day_typed_as_hhmm(typed, minutes):
    assert keyed_time(typed) == minutes
