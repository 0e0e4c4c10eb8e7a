"""One physical truth: the motor follows the plan's cumulative volume, the patient clock slows
where the bench could not follow, the driver is powered only while steps are due, and the
watchdog stops a loop, a step thread or a motor that goes wrong. In-process, virtual clock."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from rig.common.inputs import InputError
from rig.service.virtual import VirtualRig
from tests.service.conftest import program_json

EVERY_MODE = [
    "continuous",
    "flex",
    "single_bolus",
    "periodic_bolus",
    "priming_bolus",
    "bridge_bolus",
    "patient_bolus",
]


@pytest.fixture
def rig(tmp_path):
    made = VirtualRig(tmp_path)
    yield made
    made.close()


def books_minus_motor_steps(rig: VirtualRig) -> float:
    """Engine's delivered volume against the motor's steps, in steps, at the clock's time."""
    service = rig.service
    service.engine.advance()
    motor_ul = service.motion.zero_ul + service.bench.stepper.steps_issued * service.ul_per_step
    return (service.engine.state.delivered_ul - motor_ul) / service.ul_per_step


def run_to(rig: VirtualRig, moment) -> None:
    """Run the rig until the patient clock reaches *moment* (a breakpoint of the plan)."""
    rig.run(max(0.0, rig.service.clock.bench_at(moment) - rig.now_s) + 1e-6)


@pytest.mark.parametrize("mode", EVERY_MODE)
def test_engine_and_motor_agree_within_one_step_at_every_breakpoint(rig, mode):
    rig.confirm(program_json(mode))
    if mode == "patient_bolus":
        rig.run(3.0)
        assert rig.service.request_patient_bolus("trainee")["granted"]
    engine = rig.service.engine
    end = engine.state.updated_at + timedelta(days=1.5)
    breakpoints = 0
    while True:
        moment = engine.plan.next_change_after(engine.state.updated_at)
        if moment is None or moment > end:
            break
        run_to(rig, moment)
        breakpoints += 1
        assert abs(books_minus_motor_steps(rig)) < 1.0, f"{mode}: breakpoint {breakpoints}"
    run_to(rig, end)
    assert abs(books_minus_motor_steps(rig)) < 1.0
    assert breakpoints >= (0 if mode == "continuous" else 1)
    assert rig.store.alarm_history() == [], mode
    # The ledger books the motor's steps (committed every bench second).
    rig.service.stop_delivery("clinician")
    steps, volume_ul = rig.store.delivered_totals()
    assert steps == rig.service.bench.stepper.steps_issued
    assert volume_ul == pytest.approx(steps * rig.service.ul_per_step)


def test_a_patient_bolus_slows_the_clock_instead_of_overflowing_the_sensor(rig):
    rig.confirm(program_json("patient_bolus"))
    rig.run(5.0)
    clock = rig.service.clock
    assert rig.service.status()["clock"]["time_compression_effective"] == 1440
    decision = rig.service.request_patient_bolus("trainee")
    assert decision["granted"]
    rig.run(0.2)
    status = rig.service.status()
    # 25 µg / 10 min at 500 µg/mL is 300 µL/h on top of 25 µL/h basal; the bench allows
    # 2600 µL/min (80 % of the sensor's 3250): 2600 × 60 / 325 = ×480.
    assert status["clock"]["time_compression_effective"] == pytest.approx(480)
    assert status["rates"]["bench_ul_per_min"] == pytest.approx(2600, rel=1e-3)
    assert status["clock"]["bench_limited_by"].startswith("the flow sensor's range")
    ends_at = engine_time(decision["ends_at"])
    bolus_bench_s = clock.bench_at(ends_at) - clock.bench_at(engine_time(decision["at"]))
    assert bolus_bench_s == pytest.approx(600 / 480, rel=1e-3)  # ten patient minutes
    run_to(rig, ends_at)
    assert abs(books_minus_motor_steps(rig)) < 1.0  # the bolus ends on its exact step
    rig.run(20.0)
    assert rig.service.status()["clock"]["time_compression_effective"] == 1440
    assert rig.store.alarm_history() == []
    booked = rig.store.boluses()[0]
    assert (booked["state"], booked["delivered_ul"]) == ("done", pytest.approx(50.0))


def engine_time(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def test_priming_at_1000_ul_per_h_delivers_its_volume_to_the_step(rig):
    program = program_json("priming_bolus") | {"rate_ul_per_h": 1000.0}
    rig.confirm(program)
    service = rig.service
    priming_ul = service.engine.plan.one_shot_remaining_ul
    assert priming_ul == pytest.approx(45 * 2.2 + 60)
    rig.run(1.0)
    status = service.status()
    # 1000 µL/h at x1440 would ask 24 mL/min of the bench: the clock runs at 2600 × 60 / 1000.
    assert status["clock"]["time_compression_effective"] == pytest.approx(156)
    assert status["rates"]["bench_ul_per_min"] == pytest.approx(2600, rel=1e-3)
    basal_from = service.engine.plan.time_at_cumulative_ul(priming_ul)
    run_to(rig, basal_from)
    steps = service.bench.stepper.steps_issued
    assert steps == math.floor(priming_ul / service.ul_per_step + 1e-9)
    assert rig.store.alarm_history() == []


def test_a_rate_the_bench_cannot_run_even_at_x1_is_refused_naming_the_limit(rig):
    # 150 µg over 1 min at 50 µg/mL: 3 mL/min, beyond the 2.6 mL/min the sensor allows.
    program = program_json("single_bolus") | {
        "concentration_ug_per_ml": 50,
        "dose_ug": 150,
        "duration_min": 1,
    }
    with pytest.raises(InputError, match=r"flow sensor's range.*2600 µL/min"):
        rig.confirm(program)
    assert rig.service.engine.state.program is None


def test_time_compression_change_keeps_the_motor_on_the_plan(rig):
    rig.confirm(program_json("continuous"))
    rig.run(10.0)
    rig.service.set_time_compression(60.0)
    rig.run(10.0)
    status = rig.service.status()
    assert status["clock"] == status["clock"] | {
        "time_compression_nominal": 60.0,
        "time_compression_effective": 60.0,
    }
    assert status["rates"]["bench_ul_per_min"] == pytest.approx(25.0)  # 25 µL/h at x60
    assert abs(books_minus_motor_steps(rig)) < 1.0
    assert rig.store.alarm_history() == []


def test_enable_is_released_whenever_no_step_is_due(rig):
    drive = rig.service.bench.drive
    rig.run(1.0)
    assert not drive.is_enabled  # from the first moment: nothing programmed
    rig.confirm(program_json("continuous"))
    rig.run(1.0)
    assert drive.is_enabled
    rig.service.stop_delivery("clinician")
    assert not drive.is_enabled
    rig.run(1.0)
    assert not drive.is_enabled
    # At x1 a 25 µL/h rate is a step every 2.9 s: the driver rests between steps.
    rig.service.start_delivery("clinician")
    rig.service.set_time_compression(1.0)
    powered = []
    for _ in range(60):
        rig.run(0.1)
        powered.append(drive.is_enabled)
    assert any(powered) and not all(powered)


def test_closing_the_rig_leaves_enable_driven_released(rig):
    drive = rig.service.bench.drive
    rig.confirm(program_json("continuous"))
    rig.run(1.0)
    assert drive.is_enabled
    enable_pin = drive.enable.pin
    rig.close()  # service shutdown and bench close, as at SIGTERM
    assert enable_pin.function == "output"
    assert enable_pin.state == 1  # active low: high is released


def test_watchdog_trips_on_a_loop_whose_ticks_keep_failing(rig, monkeypatch):
    rig.confirm(program_json("continuous"))
    rig.run(2.0)

    def failing_tick(now_s):
        raise RuntimeError("simulated fault in every tick")

    monkeypatch.setattr(rig.service, "_tick", failing_tick)
    rig.run(1.5)
    monkeypatch.undo()
    assert not rig.service.bench.drive.is_enabled
    rig.run(0.2)
    assert "watchdog" in rig.active_codes()
    assert rig.service.status()["state"] == "stopped"
    watchdog = next(a for a in rig.service.status()["alarms"] if a["code"] == "watchdog")
    assert "ticks failed" in watchdog["message"]


def test_watchdog_trips_when_the_step_thread_dies(rig, monkeypatch):
    rig.confirm(program_json("continuous"))
    rig.run(2.0)
    stepper = rig.service.bench.stepper
    monkeypatch.setattr(type(stepper), "alive", property(lambda _self: False))
    rig.run(0.5)
    assert "watchdog" in rig.active_codes()
    assert not rig.service.bench.drive.is_enabled
    message = next(a for a in rig.service.status()["alarms"] if a["code"] == "watchdog")["message"]
    assert "step generator" in message


def test_watchdog_trips_when_the_motor_leaves_its_targets(rig, monkeypatch):
    rig.confirm(program_json("continuous"))
    rig.run(2.0)
    stepper = rig.service.bench.stepper

    def no_pulses(until_s, set_clock):
        """The step thread keeps time and heartbeat but the motor gets no pulse."""
        set_clock(until_s)
        stepper.heartbeat_s = until_s
        return 0

    monkeypatch.setattr(stepper, "run_until", no_pulses)
    rig.run(3.0)
    assert "watchdog" in rig.active_codes()
    message = next(a for a in rig.service.status()["alarms"] if a["code"] == "watchdog")["message"]
    assert "behind the plan" in message


def test_a_refill_at_2000_over_a_500_program_gives_the_patient_four_times_the_dose(rig):
    rig.confirm(program_json("continuous"))  # 300 µg/day at 500 µg/mL: 600 µL a patient day
    rig.run(2.0)
    service = rig.service
    service.stop_delivery("clinician")
    expected_ml = service.engine.state.reservoir.volume_ml
    service.refill_withdrawn(expected_ml)
    with pytest.raises(InputError, match=r"concentration_ug_per_ml: 3000 µg/mL.*allowed: 50"):
        service.refill_fill(20.0, 3000.0, "clinician")
    filled = service.refill_fill(20.0, 2000.0, "clinician")
    assert filled["bridge_bolus_offered"] is True  # offered; this trainee reprograms nothing
    status = service.status()
    assert (
        status["reservoir"]
        | {
            "concentration_ug_per_ml": 2000.0,
            "programmed_concentration_ug_per_ml": 500.0,
            "concentration_mismatch": True,
        }
        == status["reservoir"]
    )
    before_ug = status["delivered"]["patient_ug"]
    books_before_ug = status["delivered"]["books_dose_ug"]
    # The start waits for a bridge or a recorded "no bridge": this trainee skips the bridge.
    service.record_no_bridge("skipped: the debrief shows what follows", "clinician")
    service.start_delivery("clinician")
    run_to(rig, service.engine.state.updated_at + timedelta(days=1))
    service.stop_delivery("clinician")
    status = service.status()
    gained_ug = status["delivered"]["patient_ug"] - before_ug
    # 600 µL went in; the catheter's 159 µL of 500 µg/mL came out first, then 441 µL at 2000.
    catheter_ul = status["reservoir"]["catheter_volume_ul"]
    assert gained_ug == pytest.approx(catheter_ul * 0.5 + (600 - catheter_ul) * 2.0, rel=2e-3)
    assert gained_ug > 3 * 300  # about 4x the programmed daily dose once the line is through
    # The pump's books still believe the program: 300 µg a day.
    assert status["delivered"]["books_dose_ug"] - books_before_ug == pytest.approx(300, rel=2e-3)
