"""Therapy engine: two-step changes, patient boluses, alarms, and state that survives a restart."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.common.inputs import InputError
from rig.therapy.clocks import VirtualClock
from rig.therapy.drugs import DEFAULT_DRUG_LIBRARY, load_program, parse_program
from rig.therapy.engine import ProposalError, TherapyEngine
from rig.therapy.patient_bolus import BolusRefusal
from rig.therapy.reservoir import BatteryState, ReservoirState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "programs"
MONDAY = datetime(2025, 1, 6)
H = timedelta(hours=1)
MIN = timedelta(minutes=1)


def _engine(volume_ml=20.0, capacity_ml=20.0, battery=None, start=MONDAY):
    clock = VirtualClock(start, time_compression=1440)
    engine = TherapyEngine.new(
        clock,
        reservoir=ReservoirState(capacity_ml=capacity_ml, volume_ml=volume_ml),
        battery=battery,
    )
    return engine, clock


def _run(engine, program, accept_warnings=False):
    proposal = engine.propose(program)
    engine.confirm(proposal.proposal_id, accept_warnings=accept_warnings)
    return proposal


def _example(name):
    return load_program(EXAMPLES / name)


def _with_patient_bolus(dose_day=300, dose_ug=25, duration_min=10, lockout_min=180, max_per_24h=4):
    return parse_program(
        {
            "mode": "continuous",
            "concentration_ug_per_ml": 500,
            "dose_ug_per_day": dose_day,
            "patient_bolus": {
                "dose_ug": dose_ug,
                "duration_min": duration_min,
                "lockout_min": lockout_min,
                "max_per_24h": max_per_24h,
            },
        }
    )


# -- two-step change -------------------------------------------------------------------------


def test_proposal_shows_old_and_new_and_changes_nothing():
    engine, _clock = _engine()
    before = engine.to_dict()
    proposal = engine.propose(_example("continuous.toml"))
    assert engine.to_dict() == before
    assert proposal.old.mode == "stopped"
    assert proposal.old.reservoir.hours_to_empty is None
    new = proposal.new
    assert new.rate_ml_per_day == pytest.approx(0.6)
    assert new.rate_ul_per_h == pytest.approx(25.0)
    assert new.reservoir.hours_to_low == pytest.approx(720.0)
    assert new.reservoir.low_alarm_at == datetime(2025, 2, 5)
    assert new.reservoir.hours_to_empty / 24 == pytest.approx(33.33, abs=0.01)
    assert proposal.time_compression == 1440
    assert proposal.warnings == []
    status = engine.confirm(proposal.proposal_id)
    assert status.mode == "continuous"
    assert status.rate_ul_per_h_now == pytest.approx(25.0)
    assert status.time_compression == 1440


def test_second_proposal_compares_with_program_in_force():
    engine, clock = _engine()
    _run(engine, _example("continuous.toml"))
    clock.advance(24 * H)
    proposal = engine.propose(
        parse_program(
            {"mode": "continuous", "concentration_ug_per_ml": 500, "dose_ug_per_day": 360}
        )
    )
    assert proposal.old.daily_dose_ug_per_day == 300
    assert proposal.new.daily_dose_ug_per_day == 360
    # 19.4 mL left: to 2 mL at 0.6 mL/day = 29 days, at 0.72 mL/day = 24.17 days
    assert proposal.old.reservoir.hours_to_low == pytest.approx(29 * 24)
    assert proposal.new.reservoir.hours_to_low == pytest.approx(17.4 / 0.72 * 24)


def test_soft_limit_needs_accept_warnings():
    engine, _clock = _engine()
    program = parse_program(
        {"mode": "continuous", "concentration_ug_per_ml": 1000, "dose_ug_per_day": 900}
    )
    proposal = engine.propose(program)
    assert [w.code for w in proposal.warnings] == ["daily_soft_limit"]
    with pytest.raises(ProposalError) as caught:
        engine.confirm(proposal.proposal_id)
    assert caught.value.code == "warnings_not_accepted"
    assert engine.state.program is None
    engine.confirm(proposal.proposal_id, accept_warnings=True)
    assert engine.state.program == program


def test_hard_limit_rejected_and_nothing_changes():
    engine, _clock = _engine()
    _run(engine, _example("continuous.toml"))
    before = engine.to_dict()
    flex = {
        "mode": "flex",
        "concentration_ug_per_ml": 2000,
        "steps": [{"start": "00:00", "dose_ug_per_day": 2500}],
    }
    with pytest.raises(InputError, match="hard limit"):
        engine.propose(
            parse_program(
                flex,
                library=DEFAULT_DRUG_LIBRARY.updated(
                    {"drugs": {"baclofen": {"daily_hard_limit_ug_per_day": 3000}}}
                ),
            )
        )
    assert engine.to_dict() == before


def test_one_shot_bolus_larger_than_reservoir_contents_rejected():
    engine, _clock = _engine(volume_ml=0.05)
    with pytest.raises(InputError, match="volume in the reservoir"):
        engine.propose(_example("single_bolus.toml"))  # 0.1 mL


def test_stale_and_unknown_proposals_refused():
    engine, clock = _engine()
    proposal = engine.propose(_example("flex.toml"))
    engine.set_reservoir(15.0)
    with pytest.raises(ProposalError) as caught:
        engine.confirm(proposal.proposal_id)
    assert caught.value.code == "stale_proposal"
    assert engine.state.program is None
    with pytest.raises(ProposalError) as caught:
        engine.confirm("no-such-id")
    assert caught.value.code == "unknown_proposal"
    kept = [engine.propose(_example("flex.toml")).proposal_id for _ in range(40)]
    with pytest.raises(ProposalError):
        engine.confirm(kept[0])  # only the latest proposals are kept
    clock.advance(H)  # time passing alone does not make a proposal stale
    fresh = engine.propose(_example("flex.toml"))
    clock.advance(H)
    engine.confirm(fresh.proposal_id)
    assert engine.state.program.mode == "flex"


# -- modes through the engine ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "days", "expected_ml", "expected_ug"),
    [
        ("stopped.toml", 3, 0.0, 0.0),
        ("continuous.toml", 3, 1.8, 900.0),
        ("flex.toml", 7, 4.4, 2200.0),  # 5 x 320 + 2 x 300 µg at 500 µg/mL
        ("single_bolus.toml", 3, 0.1, 50.0),
        ("periodic_bolus.toml", 3, 0.9, 900.0),  # 300 µg/day at 1000 µg/mL
        ("priming_bolus.toml", 3, 0.159 + 0.4 * (3 - 0.318 / 24), 200 * (3 - 0.318 / 24)),
        ("bridge_bolus.toml", 3, 0.159 + 0.3 * (3 - 6.36 / 24), 900.0),
    ],
)
def test_each_mode_delivers_its_hand_worked_totals(name, days, expected_ml, expected_ug):
    engine, clock = _engine()
    _run(engine, _example(name))
    clock.advance(timedelta(days=days))
    status = engine.status()
    assert status.delivered_ul / 1000 == pytest.approx(expected_ml, rel=1e-9)
    assert status.delivered_ug == pytest.approx(expected_ug, rel=1e-9)
    assert status.reservoir.volume_ml == pytest.approx(20 - expected_ml, rel=1e-9)


def test_single_bolus_ends_stopped():
    engine, clock = _engine()
    _run(engine, _example("single_bolus.toml"))
    assert engine.status().phase == "single_bolus"
    clock.advance(2 * H)
    assert engine.status().phase == "stopped"
    assert engine.status().rate_ul_per_h_now == 0.0


def test_worked_example_alarms_at_30_and_33_3_days():
    engine, clock = _engine()
    _run(engine, _example("continuous.toml"))
    clock.advance(timedelta(days=40))
    events = [e for e in engine.advance() if e.kind == "alarm_raised"]
    assert [(e.code, e.at) for e in events] == [
        ("low_reservoir", MONDAY + timedelta(days=30)),
        ("empty_reservoir", MONDAY + timedelta(hours=800)),
    ]
    status = engine.status()
    assert status.highest_priority == "high"
    assert status.phase == "empty"
    assert status.reservoir.volume_ml == 0.0


def test_flex_low_reservoir_date_worked_by_hand():
    # weeks of 4.4 mL: after 4 weeks 17.6 mL are gone; 0.4 mL more on Monday: 0.14 mL by 07:00
    # at 0.48 mL/day, then 0.26 mL at 0.8 mL/day = 7.8 h -> 28 days 14 h 48 min
    engine, _clock = _engine()
    proposal = engine.propose(_example("flex.toml"))
    expected = MONDAY + timedelta(days=28, hours=14, minutes=48)
    assert proposal.new.reservoir.low_alarm_at == expected
    assert proposal.new.reservoir.hours_to_low == pytest.approx(28 * 24 + 14.8)


def test_next_event_at():
    engine, clock = _engine()
    _run(engine, _example("flex.toml"))
    assert engine.next_event_at() == MONDAY + 7 * H
    clock.set(MONDAY + timedelta(days=28, hours=10))
    assert engine.next_event_at() == MONDAY + timedelta(days=28, hours=14, minutes=48)


def test_refill_clears_reservoir_alarms():
    engine, clock = _engine(volume_ml=2.5)
    _run(engine, _example("continuous.toml"))
    clock.advance(timedelta(days=5))
    assert {a.code for a in engine.state.alarms} == set()
    engine.advance()
    assert {a.code for a in engine.state.alarms} == {"low_reservoir", "empty_reservoir"}
    engine.set_reservoir(20.0)
    assert engine.state.alarms == []
    assert engine.status().phase == "basal"
    with pytest.raises(InputError, match="volume_ml"):
        engine.set_reservoir(25.0)


def test_battery_eri_and_end_of_service_stop_therapy():
    battery = BatteryState(
        implanted_at=MONDAY - timedelta(days=1990), eri_age_days=2000, eos_after_eri_days=15
    )
    engine, clock = _engine(battery=battery)
    _run(engine, _example("continuous.toml"))
    clock.advance(timedelta(days=15))
    raised = [(e.code, e.at) for e in engine.advance() if e.kind == "alarm_raised"]
    assert raised == [("eri", MONDAY + timedelta(days=10))]
    assert engine.status().battery.state == "eri"
    clock.set(MONDAY + timedelta(days=60))
    raised = [(e.code, e.at) for e in engine.advance() if e.kind == "alarm_raised"]
    assert raised == [("end_of_service", MONDAY + timedelta(days=25))]
    status = engine.status()
    assert status.phase == "end_of_service"
    assert status.delivered_ul == pytest.approx(600 * 25)
    assert engine.request_patient_bolus().reason is BolusRefusal.NOT_AVAILABLE


# -- patient boluses -------------------------------------------------------------------------


def test_patient_bolus_granted_then_lockout_then_max():
    engine, clock = _engine()
    _run(engine, _with_patient_bolus(lockout_min=60, max_per_24h=3))
    clock.advance(H)
    first = engine.request_patient_bolus()
    assert first.granted
    assert first.ends_at == MONDAY + H + 10 * MIN
    clock.advance(30 * MIN)
    refused = engine.request_patient_bolus()
    assert refused.reason is BolusRefusal.LOCKOUT
    assert refused.message == "in lockout for 60 min (patient time) after the last bolus"
    assert refused.next_allowed_at == MONDAY + 2 * H
    clock.set(MONDAY + 2 * H)
    assert engine.request_patient_bolus().granted
    clock.set(MONDAY + 3 * H)
    assert engine.request_patient_bolus().granted
    clock.set(MONDAY + 5 * H)
    capped = engine.request_patient_bolus()
    assert capped.reason is BolusRefusal.MAX_PER_24H
    assert capped.next_allowed_at == MONDAY + 25 * H
    clock.set(MONDAY + 25 * H)
    assert engine.request_patient_bolus().granted


def test_patient_bolus_never_changes_the_basal_program():
    engine, clock = _engine()
    program = _with_patient_bolus()
    _run(engine, program)
    clock.advance(H)
    assert engine.request_patient_bolus().granted
    assert engine.state.program == program
    clock.advance(5 * MIN)
    assert engine.status().rate_ul_per_h_now == pytest.approx(25.0 + 50 / (10 / 60))
    assert engine.status().settings.daily_dose_ug_per_day == 300
    clock.advance(H)
    assert engine.status().rate_ul_per_h_now == pytest.approx(25.0)
    assert engine.status().delivered_ul == pytest.approx(25.0 * (2 + 5 / 60) + 50.0)


def test_patient_bolus_refused_while_alarm_active():
    engine, clock = _engine(volume_ml=2.2)
    _run(engine, _with_patient_bolus())
    clock.advance(timedelta(days=1))  # 0.6 mL used: below the 2 mL threshold
    decision = engine.request_patient_bolus()
    assert decision.reason is BolusRefusal.ALARM_ACTIVE
    assert "low_reservoir" in decision.message


def test_patient_bolus_refused_past_the_daily_limit():
    # 1900 µg/day programmed: only 2 boluses of 50 µg fit under the 2000 µg/day hard limit
    program = parse_program(
        {
            "mode": "continuous",
            "concentration_ug_per_ml": 2000,
            "dose_ug_per_day": 1900,
            "patient_bolus": {"dose_ug": 50, "duration_min": 5, "lockout_min": 5, "max_per_24h": 6},
        }
    )
    engine, clock = _engine()
    proposal = engine.propose(program)
    assert {w.code for w in proposal.warnings} == {"daily_soft_limit", "patient_bolus_hard_limit"}
    engine.confirm(proposal.proposal_id, accept_warnings=True)
    engine.pop_events()
    granted = []
    for _ in range(6):
        clock.advance(10 * MIN)
        granted.append(engine.request_patient_bolus())
    assert [d.granted for d in granted] == [True, True, False, False, False, False]
    assert granted[2].reason is BolusRefusal.DOSE_LIMIT
    dose_limit = [e for e in engine.pop_events() if e.code == "dose_limit"]
    assert len(dose_limit) == 4
    assert dose_limit[0].priority == "low"
    assert engine.state.alarms == []  # annunciated, not latched


def test_patient_bolus_not_available():
    engine, clock = _engine()
    _run(engine, _example("continuous.toml"))
    assert engine.request_patient_bolus().reason is BolusRefusal.NOT_AVAILABLE
    priming = parse_program(
        {
            "mode": "priming_bolus",
            "concentration_ug_per_ml": 500,
            "rate_ul_per_h": 100,
            "catheter": {"length_cm": 40, "ul_per_cm": 2, "pump_tubing_ul": 0},
            "then": {
                "mode": "continuous",
                "dose_ug_per_day": 300,
                "patient_bolus": {
                    "dose_ug": 25,
                    "duration_min": 10,
                    "lockout_min": 60,
                    "max_per_24h": 4,
                },
            },
        }
    )
    _run(engine, priming)
    clock.advance(10 * MIN)
    assert engine.request_patient_bolus().reason is BolusRefusal.NOT_AVAILABLE  # still priming
    clock.advance(H)
    assert engine.request_patient_bolus().granted


def test_worst_case_refill_forecast_takes_every_allowed_bolus():
    engine, _clock = _engine()
    proposal = engine.propose(_with_patient_bolus(dose_ug=50, max_per_24h=4))
    # 0.6 mL/day basal + 4 x 0.1 mL = 1.0 mL/day: 18 mL to the low alarm in 18 days
    assert proposal.new.worst_case.hours_to_low == pytest.approx(18 * 24)
    assert proposal.new.reservoir.hours_to_low == pytest.approx(30 * 24)


# -- service alarms, halt and resume ---------------------------------------------------------


def test_stopping_alarm_halts_cancels_bolus_and_needs_clear_and_resume():
    engine, clock = _engine()
    _run(engine, _with_patient_bolus())
    clock.advance(H)
    assert engine.request_patient_bolus().granted
    clock.advance(2 * MIN)
    engine.raise_alarm("motor_stall")
    halted_at = engine.status().delivered_ul
    assert halted_at == pytest.approx(25.0 + 25.0 * 2 / 60 + 50 * 0.2)
    clock.advance(H)
    status = engine.status()
    assert status.halted and status.delivered_ul == pytest.approx(halted_at)
    with pytest.raises(InputError, match="motor_stall"):
        engine.resume()
    engine.clear_alarm("motor_stall")
    engine.resume()
    clock.advance(H)
    assert engine.status().delivered_ul == pytest.approx(halted_at + 25.0)  # bolus not resumed


def test_single_bolus_resumes_with_what_is_left():
    engine, clock = _engine()
    _run(engine, _example("single_bolus.toml"))  # 100 µL at 100 µL/h
    clock.advance(15 * MIN)
    engine.raise_alarm("emergency_stop")
    clock.advance(H)
    engine.clear_alarm("emergency_stop")
    engine.resume()
    clock.advance(5 * H)
    assert engine.status().delivered_ul == pytest.approx(100.0)


def test_user_halt_and_resume():
    engine, clock = _engine()
    _run(engine, _example("continuous.toml"))
    clock.advance(H)
    status = engine.halt()
    assert status.halted and status.phase == "halted" and status.alarms == []
    assert [e.kind for e in engine.pop_events()][-1] == "delivery_halted"
    clock.advance(2 * H)
    assert engine.status().delivered_ul == pytest.approx(25.0)
    assert engine.resume().phase == "basal"
    clock.advance(H)
    assert engine.status().delivered_ul == pytest.approx(50.0)


def test_alarm_code_checks():
    engine, _clock = _engine()
    with pytest.raises(InputError, match="unknown alarm"):
        engine.raise_alarm("gremlins")
    with pytest.raises(InputError, match="engine itself"):
        engine.raise_alarm("low_reservoir")
    with pytest.raises(InputError, match="not active"):
        engine.acknowledge_alarm("occlusion")
    engine.raise_alarm("sensor_fault")
    engine.acknowledge_alarm("sensor_fault")
    assert engine.state.alarms[0].acknowledged
    assert not engine.state.halted


# -- persistence -----------------------------------------------------------------------------


def test_state_round_trips_and_restored_engine_continues_identically():
    engine, clock = _engine()
    _run(engine, _with_patient_bolus())
    clock.advance(3 * H)
    engine.request_patient_bolus()
    clock.advance(3 * MIN)  # mid-bolus
    data = engine.to_dict()
    restored = TherapyEngine.from_dict(data, clock)
    assert restored.to_dict() == data
    clock.advance(timedelta(days=3))
    assert restored.status().delivered_ul == pytest.approx(engine.status().delivered_ul, rel=1e-12)
    assert restored.status().reservoir == engine.status().reservoir


def test_bad_state_rejected():
    engine, clock = _engine()
    data = engine.to_dict()
    data["reservoir"]["volume_ml"] = "lots"
    with pytest.raises(InputError, match=r"reservoir\.volume_ml"):
        TherapyEngine.from_dict(data, clock)


def test_time_never_runs_backwards():
    engine, clock = _engine()
    clock.advance(H)
    engine.advance()
    with pytest.raises(InputError):
        clock.set(MONDAY)


# -- properties ------------------------------------------------------------------------------


patient_blocks = st.fixed_dictionaries(
    {
        "dose_ug": st.sampled_from([10.0, 25.0, 50.0, 100.0]),
        "duration_min": st.sampled_from([1.0, 5.0, 15.0]),
        "lockout_min": st.sampled_from([15.0, 60.0, 180.0]),
        "max_per_24h": st.integers(1, 12),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    block=patient_blocks,
    dose_day=st.sampled_from([100.0, 600.0, 1500.0, 1950.0]),
    gaps_min=st.lists(st.integers(0, 600), min_size=1, max_size=60),
)
def test_no_sequence_of_requests_passes_a_limit(block, dose_day, gaps_min):
    program = parse_program(
        {
            "mode": "continuous",
            "concentration_ug_per_ml": 2000,
            "dose_ug_per_day": dose_day,
            "patient_bolus": block,
        }
    )
    engine, clock = _engine(capacity_ml=40.0, volume_ml=40.0)
    _run(engine, program, accept_warnings=True)
    granted = []
    for gap in gaps_min:
        clock.advance(timedelta(minutes=gap))
        if engine.request_patient_bolus().granted:
            granted.append(clock.now())
    for index, start in enumerate(granted):
        if index:
            assert start - granted[index - 1] >= timedelta(minutes=block["lockout_min"])
        window = [t for t in granted if start - timedelta(days=1) < t <= start]
        assert len(window) <= block["max_per_24h"]
        assert dose_day + len(window) * block["dose_ug"] <= 2000 + 1e-9


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(
        ["continuous.toml", "flex.toml", "periodic_bolus.toml", "bridge_bolus.toml"]
    ),
    steps=st.lists(st.tuples(st.integers(1, 3000), st.booleans()), min_size=1, max_size=25),
)
def test_time_to_empty_never_increases_without_refill(name, steps):
    engine, clock = _engine(volume_ml=5.0)
    base = _example(name).model_dump()
    base_therapy = base.get("then", base)
    base_therapy["patient_bolus"] = {
        "dose_ug": 20,
        "duration_min": 5,
        "lockout_min": 30,
        "max_per_24h": 8,
    }
    _run(engine, parse_program(base))
    previous_h = previous_at = None
    for minutes, press in steps:
        clock.advance(timedelta(minutes=minutes))
        if press:
            engine.request_patient_bolus()
        status = engine.status()
        hours_to_empty = status.settings.reservoir.hours_to_empty
        empty_at = status.now + timedelta(hours=hours_to_empty)
        if previous_h is not None:
            assert hours_to_empty <= previous_h
            if hours_to_empty > 0:  # still delivering: the date itself never moves later
                assert empty_at <= previous_at + timedelta(microseconds=1)
        previous_h, previous_at = hours_to_empty, empty_at
