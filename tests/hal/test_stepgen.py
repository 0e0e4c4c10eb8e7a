"""Step generation: exact schedule arithmetic, the software backend on MockFactory, lgpio chunks."""

from __future__ import annotations

import math
import time
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.config import HardwareConfig
from hal.devices import SyringeDrive
from hal.stepgen import LgpioStepGenerator, SoftwareStepGenerator, StepRun, StepSchedule
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


def test_the_latest_step_is_kept_until_reset(drive):
    stepper = SoftwareStepGenerator(drive, record_lateness=True)
    stepper.start()
    try:
        stepper.move(300, 3000.0)
        assert stepper.wait_move(10.0)
        assert len(stepper.lateness_s) == 300
        assert stepper.max_lateness_s == max(stepper.lateness_s)
        stepper.reset_lateness()
        assert stepper.max_lateness_s == 0.0
    finally:
        stepper.close()


class FakeLgpio:
    """lgpio's pulse-train queue as the C library runs it, on a manual clock.

    Each ``tx_pulse`` with a cycle count is one queue entry; an entry starts when the one before
    it ends (or at once on an idle line) and fires one pulse at the start of each period;
    ``tx_room`` is the free entries; ``tx_pulse(h, g, 0, 0)`` cancels everything at once.
    """

    TX_PWM = 0
    CAPACITY = 4

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.entries: deque[list[float]] = deque()  # [start_s, period_s, pulses]
        self.fired = 0  # pulses that reached the pin from finished or cancelled entries
        self.cancels = 0
        self.gpios: set[int] = set()

    def _ended(self, entry: list[float]) -> float:
        return entry[0] + entry[1] * entry[2]

    def _fired_by(self, entry: list[float], now_s: float) -> int:
        if now_s < entry[0]:
            return 0
        return min(int(entry[2]), math.floor((now_s - entry[0]) / entry[1]) + 1)

    def _retire(self) -> None:
        now_s = self.clock()
        while self.entries and self._ended(self.entries[0]) <= now_s:
            self.fired += int(self.entries.popleft()[2])

    def emitted(self) -> int:
        """Pulses on the pin so far (the truth the generator's count is held to)."""
        self._retire()
        running = self._fired_by(self.entries[0], self.clock()) if self.entries else 0
        return self.fired + running

    def tx_room(self, handle, gpio, kind) -> int:
        self._retire()
        return self.CAPACITY - len(self.entries)

    def tx_pulse(self, handle, gpio, on_us, off_us, offset=0, cycles=0) -> int:
        self._retire()
        self.gpios.add(gpio)
        if on_us == 0 and off_us == 0:
            self.cancels += 1
            if self.entries:
                self.fired += self._fired_by(self.entries[0], self.clock())
            self.entries.clear()
            return 0
        assert cycles > 0 and len(self.entries) < self.CAPACITY, "lgpio's queue is full"
        start_s = self._ended(self.entries[-1]) if self.entries else self.clock()
        self.entries.append([start_s, (on_us + off_us) / 1e6, cycles])
        return self.CAPACITY - len(self.entries)


@pytest.fixture
def lgpio_stepper(drive):
    clock = ManualClock()
    fake = FakeLgpio(clock)
    stepper = LgpioStepGenerator(
        drive, lgpio_module=fake, chip_handle=0, clock=clock, start_thread=False
    )
    yield stepper, fake, clock
    stepper.close()


def run_lgpio(stepper, clock, until_s: float, period_s: float = 0.01) -> list[int]:
    """Advance the clock, letting the generator's thread pass run every *period_s*."""
    counts = []
    while clock() < until_s - 1e-9:
        clock.advance(period_s)
        stepper.service(clock())
        counts.append(stepper.steps_issued)
    return counts


def test_lgpio_count_is_exact_never_ahead_of_the_pin_and_never_back(lgpio_stepper):
    stepper, fake, clock = lgpio_stepper
    stepper.set_rate(1234.5)
    counts = run_lgpio(stepper, clock, 10.0)
    assert counts == sorted(counts)  # never goes back
    assert all(count <= fake.emitted() for count in counts[-1:])
    assert fake.gpios == {18}
    # Ten seconds at 1234.5 steps/s, to within the chunks still queued.
    assert abs(fake.emitted() - 12_345) <= 1234.5 * stepper.CHUNK_S * stepper.QUEUE_AHEAD + 1
    stepper.follow(None)  # no more chunks: the queue runs out and the count catches up exactly
    run_lgpio(stepper, clock, 10.2)
    assert stepper.steps_issued == fake.emitted()


def test_lgpio_follows_step_targets_and_ends_on_the_exact_step(lgpio_stepper):
    stepper, fake, clock = lgpio_stepper
    stepper.follow(FixedRun(StepRun(first=1, last=777, first_due_s=0.1, period_s=1 / 3000)))
    run_lgpio(stepper, clock, 2.0)
    assert fake.emitted() == stepper.steps_issued == 777


def test_lgpio_stop_cancels_at_once_and_counts_the_running_chunk_in_full(lgpio_stepper):
    stepper, fake, clock = lgpio_stepper
    stepper.set_rate(2000.0)
    run_lgpio(stepper, clock, 1.0)
    clock.advance(0.004)  # in the middle of a chunk
    before = stepper.steps_issued
    stepper.stop()
    after = stepper.steps_issued
    assert fake.cancels == 1 and fake.entries == deque()
    assert before <= after
    assert fake.emitted() <= after <= fake.emitted() + 2000 * stepper.CHUNK_S + 1
    run_lgpio(stepper, clock, 1.5)
    assert stepper.steps_issued == after  # nothing after a stop


class FixedRun:
    """Step targets of one run."""

    def __init__(self, run: StepRun) -> None:
        self.run = run

    def run_from(self, step: int) -> StepRun | None:
        return self.run if self.run.covers(step) else None
