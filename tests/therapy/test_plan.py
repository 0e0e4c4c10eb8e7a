"""Delivery plan: piecewise-constant rates, exact integrals and microsteps without drift."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.common.schedule import format_hhmm
from rig.therapy.drugs import load_program, parse_program
from rig.therapy.plan import (
    bench_steps_per_s,
    bolus_overlay,
    build_plan,
    compile_regimen,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"
MONDAY = datetime(2025, 1, 6)
UL_PER_STEP = 0.0204424
H = timedelta(hours=1)


def _plan(program, origin=MONDAY, **kwargs):
    return build_plan(compile_regimen(program), origin, **kwargs)


def test_continuous_rate_and_volume():
    plan = _plan(load_program(EXAMPLES / "continuous.toml"))
    assert plan.rate_ul_per_h(MONDAY + 5 * H) == pytest.approx(25.0)
    assert plan.volume_ul(MONDAY, MONDAY + timedelta(days=1)) == pytest.approx(600.0)
    assert plan.dose_ug(MONDAY, MONDAY + timedelta(days=1)) == pytest.approx(300.0)
    assert plan.next_change_after(MONDAY) is None


def test_flex_rates_follow_the_clock_and_weekday():
    plan = _plan(load_program(EXAMPLES / "flex.toml"))
    assert plan.rate_ul_per_h(MONDAY + 6.5 * H) == pytest.approx(20.0)  # 240 µg/day at 500
    assert plan.rate_ul_per_h(MONDAY + 7 * H) == pytest.approx(400 / 500 * 1000 / 24)
    assert plan.next_change_after(MONDAY + 1 * H) == MONDAY + 7 * H
    assert plan.next_change_after(MONDAY + 7 * H) == MONDAY + 19 * H
    # Monday: 320 µg = 0.64 mL; Saturday (5 days later): 300 µg = 0.6 mL
    assert plan.volume_ul(MONDAY, MONDAY + 24 * H) == pytest.approx(640.0)
    saturday = MONDAY + timedelta(days=5)
    assert plan.volume_ul(saturday, saturday + 24 * H) == pytest.approx(600.0)
    assert plan.rate_ul_per_h(saturday + 12 * H) == pytest.approx(25.0)
    # one whole week: 5 x 0.64 + 2 x 0.6 = 4.4 mL
    assert plan.volume_ul(MONDAY, MONDAY + timedelta(days=7)) == pytest.approx(4400.0)


def test_flex_started_mid_step():
    plan = _plan(load_program(EXAMPLES / "flex.toml"), origin=MONDAY + 10 * H)
    # 10:00-19:00 at 400 µg/day, 19:00-24:00 at 240 µg/day, 500 µg/mL
    expected_ul = (400 * 9 / 24 + 240 * 5 / 24) / 500 * 1000
    assert plan.volume_ul(MONDAY + 10 * H, MONDAY + 24 * H) == pytest.approx(expected_ul)
    assert plan.cumulative_volume_ul(MONDAY) == 0.0  # the plan never looks back


def test_single_bolus_then_stopped():
    plan = _plan(load_program(EXAMPLES / "single_bolus.toml"))  # 50 µg / 60 min at 500 µg/mL
    assert plan.rate_ul_per_h(MONDAY) == pytest.approx(100.0)
    assert plan.segment_at(MONDAY).phase == "single_bolus"
    assert plan.segment_at(MONDAY + 2 * H).phase == "stopped"
    assert plan.volume_ul(MONDAY, MONDAY + timedelta(days=3)) == pytest.approx(100.0)
    assert plan.end_of_delivery() == MONDAY + H


def test_periodic_bolus_adds_to_background():
    plan = _plan(load_program(EXAMPLES / "periodic_bolus.toml"))  # 1000 µg/mL
    background = 200 / 1000 * 1000 / 24
    assert plan.rate_ul_per_h(MONDAY + 1 * H) == pytest.approx(background)
    assert plan.rate_ul_per_h(MONDAY + 2.2 * H) == pytest.approx(background + 25 / 0.5)
    assert plan.segment_at(MONDAY + 2.2 * H).phase == "periodic_bolus"
    assert plan.dose_ug(MONDAY, MONDAY + 24 * H) == pytest.approx(300.0)


def test_priming_bolus_then_program():
    plan = _plan(load_program(EXAMPLES / "priming_bolus.toml"))
    priming_h = 159 / 500
    assert plan.segment_at(MONDAY).phase == "priming_bolus"
    assert plan.next_change_after(MONDAY) == MONDAY + timedelta(hours=priming_h)
    assert plan.volume_ul(MONDAY, MONDAY + timedelta(hours=priming_h)) == pytest.approx(159.0)
    # the catheter held no drug: nothing reaches the patient while priming
    assert plan.dose_ug(MONDAY, MONDAY + timedelta(hours=priming_h)) == 0.0
    day_ug = plan.dose_ug(MONDAY, MONDAY + 24 * H)
    assert day_ug == pytest.approx(200 * (24 - priming_h) / 24)
    assert plan.one_shot_remaining_ul == pytest.approx(159.0)


def test_bridge_bolus_delivers_old_drug_at_old_rate():
    plan = _plan(load_program(EXAMPLES / "bridge_bolus.toml"))
    bridge_h = 159 / 25  # old 300 µg/day at 500 µg/mL = 25 µL/h
    assert plan.rate_ul_per_h(MONDAY) == pytest.approx(25.0)
    end = MONDAY + timedelta(hours=bridge_h)
    assert plan.dose_ug(MONDAY, end) == pytest.approx(159 / 1000 * 500)  # old concentration
    assert plan.rate_ul_per_h(end + H) == pytest.approx(12.5)  # 300 µg/day at 1000 µg/mL
    # the old dose rate continues seamlessly through the bridge
    assert plan.dose_ug(MONDAY, MONDAY + 24 * H) == pytest.approx(300.0)


def test_resuming_part_way_through_a_one_shot():
    program = load_program(EXAMPLES / "single_bolus.toml")
    plan = _plan(program, one_shot_done_ul=40.0)
    assert plan.volume_ul(MONDAY, MONDAY + 5 * H) == pytest.approx(60.0)


def test_patient_bolus_overlay_adds_without_changing_basal():
    program = load_program(EXAMPLES / "patient_bolus.toml")
    bolus = bolus_overlay(MONDAY + 2 * H, 25, 10, 500)
    plan = _plan(program, overlays=[bolus])
    assert plan.rate_ul_per_h(MONDAY + 1 * H) == pytest.approx(25.0)
    assert plan.rate_ul_per_h(MONDAY + 2.1 * H) == pytest.approx(25.0 + 50 / (10 / 60))
    assert plan.rate_ul_per_h(MONDAY + 3 * H) == pytest.approx(25.0)
    assert plan.volume_ul(MONDAY, MONDAY + 24 * H) == pytest.approx(600.0 + 50.0)


def test_volume_cap_empties_and_stop_at_ends_service():
    program = load_program(EXAMPLES / "continuous.toml")
    plan = _plan(program, volume_cap_ul=100.0)
    assert plan.time_at_cumulative_ul(100.0) == MONDAY + 4 * H
    assert plan.segment_at(MONDAY + 5 * H).phase == "empty"
    assert plan.volume_ul(MONDAY, MONDAY + 48 * H) == pytest.approx(100.0)
    assert plan.time_at_cumulative_ul(100.1) is None
    stopped = _plan(program, stop_at=MONDAY + 10 * H)
    assert stopped.volume_ul(MONDAY, MONDAY + 48 * H) == pytest.approx(250.0)
    assert stopped.segment_at(MONDAY + 11 * H).phase == "end_of_service"


def test_halted_plan_delivers_nothing():
    plan = _plan(load_program(EXAMPLES / "continuous.toml"), halted=True)
    assert plan.volume_ul(MONDAY, MONDAY + 48 * H) == 0.0
    assert plan.time_at_cumulative_ul(1.0) is None


def test_step_times_come_from_the_absolute_integral():
    plan = _plan(load_program(EXAMPLES / "continuous.toml"))  # 25 µL/h
    one_hour_steps = plan.cumulative_steps(MONDAY + H, UL_PER_STEP)
    assert one_hour_steps == int(25.0 / UL_PER_STEP)
    times = list(plan.step_times(MONDAY, MONDAY + H, UL_PER_STEP))
    assert len(times) == one_hour_steps
    assert times == sorted(times)
    for number in (1, 2, 100, one_hour_steps):
        due = plan.step_time(number, UL_PER_STEP)
        assert plan.cumulative_steps(due, UL_PER_STEP) == number
        assert plan.cumulative_steps(due - timedelta(microseconds=1), UL_PER_STEP) == number - 1
    expected_first_s = UL_PER_STEP / 25.0 * 3600
    assert (times[0] - MONDAY).total_seconds() == pytest.approx(expected_first_s, abs=1e-6)


def test_batching_steps_never_accumulates_rounding():
    plan = _plan(load_program(EXAMPLES / "flex.toml"))
    total = 0
    moment = MONDAY
    for _ in range(1000):  # 1000 batches of 37.123 s: 10 h 18 min 43 s of a Monday
        later = moment + timedelta(seconds=37.123)
        total += plan.cumulative_steps(later, UL_PER_STEP) - plan.cumulative_steps(
            moment, UL_PER_STEP
        )
        moment = later
    # Worked by hand from flex.toml: 240 µg/day until 07:00, then 400 µg/day; at 500 µg/mL.
    hours_after_seven = 37.123 * 1000 / 3600 - 7
    expected_ul = (240 * 7 / 24 + 400 * hours_after_seven / 24) / 500 * 1000
    # Within one step of the hand-worked volume (a batcher rounding each batch down would lose
    # up to one step per batch: 1000 steps).
    assert abs(total * UL_PER_STEP - expected_ul) < UL_PER_STEP


def test_bench_step_rate():
    # 0.6 mL/day at x1440 is 0.6 mL per bench minute = 10 µL/s
    assert bench_steps_per_s(25.0, UL_PER_STEP, 1440) == pytest.approx(10 / UL_PER_STEP)
    # domain reference: 1 mL/h at x1 is about 13.6 µsteps/s with a 0.0204 µL step
    assert bench_steps_per_s(1000.0, 0.0204, 1) == pytest.approx(13.6, abs=0.05)


@st.composite
def flex_programs(draw):
    count = draw(st.integers(min_value=1, max_value=13))
    minutes = sorted(draw(st.sets(st.integers(1, 1439), min_size=count - 1, max_size=count - 1)))
    starts = [0, *minutes]
    doses = draw(st.lists(st.floats(10, 700), min_size=count, max_size=count))
    concentration = draw(st.sampled_from([50.0, 500.0, 1000.0, 2000.0]))
    steps = [
        {"start": format_hhmm(start), "dose_ug_per_day": dose}
        for start, dose in zip(starts, doses, strict=True)
    ]
    return parse_program({"mode": "flex", "concentration_ug_per_ml": concentration, "steps": steps})


@settings(max_examples=200, deadline=None)
@given(
    program=flex_programs(),
    origin_offset_s=st.integers(0, 86_400 * 3),
    day_offset_s=st.integers(0, 86_400 * 30),
)
def test_any_patient_day_delivers_the_programmed_total_within_one_microstep(
    program, origin_offset_s, day_offset_s
):
    origin = MONDAY + timedelta(seconds=origin_offset_s)
    plan = _plan(program, origin=origin)
    day_start = origin + timedelta(seconds=day_offset_s)
    steps = plan.cumulative_steps(day_start + 24 * H, UL_PER_STEP) - plan.cumulative_steps(
        day_start, UL_PER_STEP
    )
    programmed_ul = program.max_daily_total_ug() / program.concentration_ug_per_ml * 1000
    assert abs(steps * UL_PER_STEP - programmed_ul) <= UL_PER_STEP
    assert plan.volume_ul(day_start, day_start + 24 * H) == pytest.approx(programmed_ul, rel=1e-9)
