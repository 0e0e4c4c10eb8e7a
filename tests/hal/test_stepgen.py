"""Step generation: exact schedule arithmetic, the software backend on MockFactory, lgpio chunks."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.config import HardwareConfig
from hal.devices import SyringeDrive
from hal.stepgen import LgpioStepGenerator, SoftwareStepGenerator, StepSchedule
from tests.manual_clock import ManualClock


@pytest.fixture
def drive(mock_factory):
    config = HardwareConfig()
    drive = SyringeDrive.from_config(config.pins, config.drive, pin_factory=mock_factory)
    drive.energise()
    yield drive
    drive.close()


def count_rising_edges(mock_factory, pin_number: int) -> list[int]:
    edges = [0]

    def on_change(state: float) -> None:
        if state > 0.5:
            edges[0] += 1

    mock_factory.pin(pin_number).add_listener(on_change)
    return edges


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=20_000.0),  # steps/s
            st.floats(min_value=0.0, max_value=0.5),  # s
        ),
        min_size=1,
        max_size=12,
    )
)
def test_schedule_never_drifts_more_than_one_step_from_the_integral(segments):
    schedule = StepSchedule(0.0)
    now_s = 0.0
    integral = 0.0
    for rate, duration_s in segments:
        schedule.set_rate(rate, now_s)
        end_s = now_s + duration_s
        while (deadline := schedule.next_deadline()) is not None and deadline <= end_s:
            schedule.steps_issued += 1
            assert deadline >= now_s - 1e-12
        integral += rate * duration_s
        now_s = end_s
        assert abs(schedule.steps_issued - integral) <= 1.0 + 1e-6 * max(1.0, integral)


def test_rate_change_carries_the_fraction_of_a_step():
    schedule = StepSchedule(0.0)
    schedule.set_rate(10.0, 0.0)  # a step every 0.1 s
    assert schedule.next_deadline() == pytest.approx(0.1)
    schedule.steps_issued = 1
    schedule.set_rate(1.0, 0.15)  # half a step accrued: the next is due 0.5 s later, not 1 s
    assert schedule.next_deadline() == pytest.approx(0.65)


def test_non_integer_period_accumulates_no_error_over_a_long_run():
    rate = 3 / 0.0007  # period 233.33… µs
    schedule = StepSchedule(0.0)
    schedule.set_rate(rate, 0.0)
    issued_by_deadlines = 0
    for _ in range(1_000_000):
        schedule.next_deadline()
        schedule.steps_issued += 1
        issued_by_deadlines += 1
    last_deadline = schedule.next_deadline()
    assert last_deadline == pytest.approx((issued_by_deadlines + 1) / rate, rel=1e-12)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bad_rates_are_rejected(bad):
    schedule = StepSchedule(0.0)
    with pytest.raises(ValueError, match="step rate"):
        schedule.set_rate(bad, 0.0)


def test_stop_drops_owed_steps_but_keeps_the_partial_one():
    schedule = StepSchedule(0.0)
    schedule.set_rate(100.0, 0.0)
    schedule.stop(0.105)  # 10.5 steps owed, none issued
    assert schedule.rate_steps_per_s == 0
    assert schedule.next_deadline() is None
    schedule.set_rate(100.0, 1.0)
    assert schedule.next_deadline() == pytest.approx(1.005)


def test_virtual_clock_run_issues_exactly_the_ideal_count(drive, mock_factory):
    clock = ManualClock()
    edges = count_rising_edges(mock_factory, 18)
    stepper = SoftwareStepGenerator(drive, clock=clock)
    stepper.set_rate(333.3)
    stepper.run_until(10.0, set_clock=clock.set)
    assert stepper.steps_issued == math.floor(3333.0) == edges[0]
    stepper.set_rate(0.5)
    stepper.run_until(13.0, set_clock=clock.set)
    assert stepper.steps_issued == 3334  # 1.5 steps accrued over 3 s
    assert abs(stepper.ideal_steps() - stepper.steps_issued) < 1.0


def test_withdraw_move_is_counted_apart_and_direction_restored(drive):
    clock = ManualClock()
    stepper = SoftwareStepGenerator(drive, clock=clock)
    stepper.move(250, 1000.0, withdraw=True)
    assert drive.direction_name == "withdraw"
    stepper.run_until(1.0, set_clock=clock.set)
    assert stepper.steps_withdrawn == 250
    assert stepper.steps_issued == 0
    assert drive.direction_name == "infuse"
    assert stepper.wait_move(0)


def test_infusing_during_a_withdraw_move_is_refused(drive):
    clock = ManualClock()
    stepper = SoftwareStepGenerator(drive, clock=clock)
    stepper.move(100, 1000.0, withdraw=True)
    with pytest.raises(RuntimeError, match="withdraw"):
        stepper.set_rate(10.0)


@pytest.mark.timeout(20)
def test_real_time_thread_issues_a_move_exactly_then_stops(drive, mock_factory):
    edges = count_rising_edges(mock_factory, 18)
    stepper = SoftwareStepGenerator(drive)
    stepper.start()
    try:
        stepper.move(500, 5000.0)
        assert stepper.wait_move(10.0)
        assert stepper.steps_issued == 500 == edges[0]
        stepper.set_rate(2000.0)
        time.sleep(0.05)
        stepper.stop()
        after_stop = edges[0]
        time.sleep(0.05)
        assert edges[0] == after_stop == stepper.steps_issued
        assert after_stop > 500
        assert stepper.heartbeat_s > 0
    finally:
        stepper.close()


class PulseTrainRecorder:
    """Stands in for the lgpio C library's tx_pulse contract: records each queued pulse train."""

    def __init__(self) -> None:
        self.trains: list[tuple[int, int, int, int]] = []  # gpio, on_us, off_us, pulses
        self.cancels = 0

    def tx_pulse(self, handle, gpio, on_us, off_us, offset=0, cycles=0):
        if on_us == 0 and off_us == 0:
            self.cancels += 1
        else:
            self.trains.append((gpio, on_us, off_us, cycles))
        return 0


def test_lgpio_backend_chunks_follow_the_ideal_schedule(drive):
    clock = ManualClock()
    recorder = PulseTrainRecorder()
    stepper = LgpioStepGenerator(drive, lgpio_module=recorder, chip_handle=0, clock=clock)
    stepper._closed = True  # drive the queueing by hand, without the background thread
    stepper._thread.join()
    stepper.set_rate(1234.5)
    total = 0
    for tick in range(1, 201):  # 10 s in 50 ms ticks
        now_s = tick * 0.05
        clock.set(now_s)
        with stepper._lock:
            stepper._retire_chunks(now_s)
            while len(stepper._queued) < stepper.QUEUE_AHEAD and stepper._queue_chunk(now_s):
                pass
        total = sum(train[3] for train in recorder.trains)
        queued_until = stepper._queued_until_s
        assert abs(total - 1234.5 * queued_until) <= 1.0 + 1234.5 * 1e-6 * 50
    assert all(train[0] == 18 for train in recorder.trains)
    assert total > 12_000
    stepper.stop()
    assert recorder.cancels >= 1
