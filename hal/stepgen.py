"""Step generation: microsteps on an absolute-deadline schedule, never a sum of periods.

:class:`StepSchedule` is the arithmetic: the ideal step count is the integral of a piecewise-
constant rate, and step *n* is due when that integral reaches *n*. A rate change starts a new
segment at the current ideal count (the fraction of a step already accrued is carried), so the
count issued never differs from the ideal schedule by more than one step, however long it runs.

Two backends issue the steps:

* :class:`SoftwareStepGenerator` — a thread that sleeps to just before each deadline and spins
  the rest, writing the STEP pin through gpiozero (any pin factory, MockFactory included). It
  can also run without a thread under a supplied clock (:meth:`run_until`), for simulations faster
  than real time.
* :class:`LgpioStepGenerator` — hands chunks of pulses to lgpio's pulse generator
  (``tx_pulse``), each chunk aimed at the step targets. Pi only.

Neither is hardware-timed. lgpio's pulses are *software-timed* (its documentation says so): a
thread inside the lgpio C library sleeps until each edge and writes the line through the
kernel's GPIO character device. That thread is free of Python's GIL and of this process's other
threads, but it is an ordinary Linux thread, so expect what such a thread gets: edge errors of
tens of µs on an idle Pi and, under load or on a kernel without real-time patches, occasional
edges a millisecond or more late (an expectation from how it is scheduled; this project has not
measured it on a Pi yet). Lateness never changes how many steps are issued: every chunk's pulse
count comes from the step targets. ``bench/step_timing.py --backend lgpio`` measures it on a
Pi, with STEP looped back to an input pin whose edges the kernel timestamps.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hal.devices import Direction, SyringeDrive

Clock = Callable[[], float]


PR_SET_TIMERSLACK = 29


def reduce_timer_slack() -> bool:
    """Ask Linux to wake this thread within 1 ns of its timeouts (default slack is 50 µs).

    Returns False where that is not possible (not Linux); lateness is then a little higher.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class StepRun:
    """Equally spaced infusing steps: step numbers *first* to *last* (inclusive; None: no end),
    step *first* due at clock second *first_due_s*, each next one *period_s* later."""

    first: int
    last: int | None
    first_due_s: float
    period_s: float

    def covers(self, step: int) -> bool:
        return step >= self.first and (self.last is None or step <= self.last)

    def due_s(self, step: int) -> float:
        return self.first_due_s + (step - self.first) * self.period_s


class StepTargets(Protocol):
    """Where the motor should be when: the step times a caller derives from its own truth.

    Step numbers count infusing steps as the generator does (:attr:`steps_issued` + 1 is the next
    one). The generator asks for the run that contains a step and keeps it until it is used up.
    """

    def run_from(self, step: int) -> StepRun | None:
        """The run that contains *step*, or None when it is never due (stopped)."""


class StepGenerator(Protocol):
    """What the rig needs from a step generator, whichever backend issues the pulses."""

    @property
    def rate_steps_per_s(self) -> float: ...

    @property
    def steps_issued(self) -> int:
        """Infusing microsteps issued since construction (withdraw moves are not counted)."""

    @property
    def heartbeat_s(self) -> float:
        """Clock time at which the step loop last ran (for the watchdog)."""

    @property
    def alive(self) -> bool:
        """False once the step thread has died (an uncaught error) or was closed."""

    def set_rate(self, steps_per_s: float) -> None: ...

    def follow(self, targets: StepTargets | None) -> None:
        """Issue each step at the time *targets* gives (None: no further step)."""

    def next_due_s(self) -> float | None:
        """Clock second at which the next step is due (None: none is)."""

    def stop(self) -> None: ...

    def close(self) -> None: ...


class StepSchedule:
    """Exact step deadlines for a piecewise-constant rate (steps/s), in clock seconds."""

    def __init__(self, now_s: float = 0.0) -> None:
        self.rate_steps_per_s = 0.0
        self._segment_start_s = now_s
        self._ideal_at_segment_start = 0.0
        self.steps_issued = 0
        self.target_steps: int | None = None

    def ideal_steps(self, now_s: float) -> float:
        """Steps the schedule says should have been issued by *now_s* (continuous)."""
        elapsed_s = max(0.0, now_s - self._segment_start_s)
        return self._ideal_at_segment_start + elapsed_s * self.rate_steps_per_s

    def set_rate(self, steps_per_s: float, now_s: float) -> None:
        """Change the rate at *now_s*, carrying the fraction of a step already accrued."""
        if not math.isfinite(steps_per_s) or steps_per_s < 0:
            raise ValueError(
                f"step rate must be a finite number >= 0 steps/s (delivery never reverses), "
                f"not {steps_per_s!r}"
            )
        ideal = self.ideal_steps(now_s)
        # Whole steps owed (late) are kept; a stop drops them (see stop()).
        self._ideal_at_segment_start = ideal
        self._segment_start_s = now_s
        self.rate_steps_per_s = float(steps_per_s)

    def stop(self, now_s: float) -> None:
        """Rate 0 at once; steps due but not yet issued are dropped, the partial step kept."""
        ideal = self.ideal_steps(now_s)
        fraction = ideal - math.floor(ideal)
        self._ideal_at_segment_start = min(ideal, self.steps_issued + fraction)
        self._segment_start_s = now_s
        self.rate_steps_per_s = 0.0
        self.target_steps = None

    def restart(self, now_s: float) -> None:
        """Stopped at *now_s*, with nothing owed: the steps issued are where the schedule is."""
        self._ideal_at_segment_start = float(self.steps_issued)
        self._segment_start_s = now_s
        self.rate_steps_per_s = 0.0
        self.target_steps = None

    def next_deadline(self) -> float | None:
        """Clock time at which the next step is due, or None when stopped or the target is met."""
        if self.target_steps is not None and self.steps_issued >= self.target_steps:
            return None
        owed = self.steps_issued + 1 - self._ideal_at_segment_start
        if owed <= 0:
            return self._segment_start_s
        if self.rate_steps_per_s <= 0:
            return None
        return self._segment_start_s + owed / self.rate_steps_per_s

    def steps_due(self, now_s: float) -> int:
        """How many steps are due by *now_s* and not yet issued (capped by the target)."""
        due = math.floor(self.ideal_steps(now_s) + 1e-9) - self.steps_issued
        if self.target_steps is not None:
            due = min(due, self.target_steps - self.steps_issued)
        return max(0, due)


class SoftwareStepGenerator:
    """Software-timed STEP pulses from a dedicated thread, on absolute deadlines.

    The thread sleeps until *spin_s* before a deadline and busy-waits the rest, then pulses STEP.
    With ``spin_s=0`` (the default) it only sleeps, with a 1 ns timer slack: a few % of a core at
    implant-like rates instead of most of one (``bench/step_timing.py`` measures both).
    Lateness (actual − deadline) of every step can be recorded for benchmarks.
    """

    HEARTBEAT_S = 0.05
    SHORT_SLEEP_S = 0.005
    """Waits up to this long use a plain sleep, longer ones a wakeable event."""

    def __init__(
        self,
        drive: SyringeDrive,
        *,
        clock: Clock = time.perf_counter,
        spin_s: float = 0.0,
        record_lateness: bool = False,
        max_rate_steps_per_s: float = math.inf,
    ) -> None:
        self._drive = drive
        self._clock = clock
        self._spin_s = spin_s
        self._min_period_s = 1.0 / max_rate_steps_per_s
        self._targets: StepTargets | None = None
        self._step_run: StepRun | None = None
        self._last_pulse_s = -math.inf
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._move_done = threading.Event()
        self._move_done.set()
        self._closed = False
        self._schedule = StepSchedule(clock())
        self._withdrawn = 0
        self._withdrawing = False
        self.lateness_s: list[float] | None = [] if record_lateness else None
        self.max_lateness_s = 0.0
        """The latest step (actual − deadline) since the start or :meth:`reset_lateness`."""
        self.heartbeat_s = clock()
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the real-time step thread (not needed for :meth:`run_until` simulation)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="step-generator", daemon=True)
            self._thread.start()

    @property
    def rate_steps_per_s(self) -> float:
        """The step rate now: the schedule's, or the run being followed."""
        run = self._step_run
        if self._targets is not None:
            return 0.0 if run is None or run.period_s <= 0 else 1.0 / run.period_s
        return self._schedule.rate_steps_per_s

    @property
    def steps_issued(self) -> int:
        return self._schedule.steps_issued - self._withdrawn

    @property
    def alive(self) -> bool:
        """The step thread runs (always True for a generator driven by :meth:`run_until`)."""
        if self._closed:
            return False
        return self._thread is None or self._thread.is_alive()

    @property
    def steps_withdrawn(self) -> int:
        return self._withdrawn

    def ideal_steps(self) -> float:
        with self._lock:
            return self._schedule.ideal_steps(self._clock()) - self._withdrawn

    def reset_lateness(self) -> None:
        """Start :attr:`max_lateness_s` afresh."""
        self.max_lateness_s = 0.0

    def set_rate(self, steps_per_s: float) -> None:
        """Infuse at *steps_per_s* from now on (0 pauses, keeping the partial step)."""
        with self._lock:
            if self._withdrawing:
                raise RuntimeError("a withdraw move is running; stop it before infusing")
            now = self._clock()
            if self._targets is not None:
                self._targets = self._step_run = None
                self._schedule.restart(now)
            self._schedule.set_rate(steps_per_s, now)
            self._drive.point("infuse")
        self._wake.set()

    def follow(self, targets: StepTargets | None) -> None:
        """Infuse each step at the time *targets* gives it, from the next step on (None: stop).

        Steps already due are issued at once, no faster than the drive's maximum rate.
        """
        with self._lock:
            if self._withdrawing:
                raise RuntimeError("a withdraw move is running; stop it before infusing")
            self._schedule.restart(self._clock())
            self._targets, self._step_run = targets, None
            self._drive.point("infuse")
        self._wake.set()

    def next_due_s(self) -> float | None:
        with self._lock:
            return self._next_deadline()

    def stop(self) -> None:
        """Stop at once: no further pulse after this returns."""
        with self._lock:
            self._schedule.stop(self._clock())
            self._targets = self._step_run = None
            self._withdrawing = False
            self._drive.point("infuse")
            self._move_done.set()
        self._wake.set()

    def move(self, steps: int, steps_per_s: float, *, withdraw: bool = False) -> None:
        """Start a move of exactly *steps* microsteps; :meth:`wait_move` waits for its end.

        A withdraw move (refill only) pulls the plunger back; its steps are subtracted from
        :attr:`steps_issued` and counted in :attr:`steps_withdrawn`.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0, not {steps}")
        with self._lock:
            schedule = self._schedule
            schedule.stop(self._clock())
            self._targets = self._step_run = None
            direction: Direction = "withdraw" if withdraw else "infuse"
            self._drive.point(direction)
            self._withdrawing = withdraw
            schedule.target_steps = schedule.steps_issued + steps
            schedule.set_rate(steps_per_s, self._clock())
            self._move_done.clear() if steps else self._move_done.set()
        self._wake.set()

    def wait_move(self, timeout_s: float | None = None) -> bool:
        """Wait until the current move has issued all its steps; True if it did."""
        return self._move_done.wait(timeout_s)

    def close(self) -> None:
        self.stop()
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    # -- issuing ------------------------------------------------------------------------------

    def _next_deadline(self) -> float | None:
        """When the next step is due (lock held): from the targets followed, else the schedule."""
        targets = self._targets
        if targets is None:
            deadline = self._schedule.next_deadline()
        else:
            step = self.steps_issued + 1
            run = self._step_run
            if run is None or not run.covers(step):
                run = self._step_run = targets.run_from(step)
            if run is None:
                return None
            deadline = run.due_s(step)
        if deadline is None:
            return None
        return max(deadline, self._last_pulse_s + self._min_period_s)

    def _issue(self, deadline_s: float, now_s: float) -> None:
        """Pulse once; called with the lock held."""
        self._drive.pulse()
        self._last_pulse_s = now_s
        schedule = self._schedule
        schedule.steps_issued += 1
        if self._withdrawing:
            self._withdrawn += 1
        late_s = now_s - deadline_s
        if late_s > self.max_lateness_s:
            self.max_lateness_s = late_s
        if self.lateness_s is not None:
            self.lateness_s.append(late_s)
        if schedule.target_steps is not None and schedule.steps_issued >= schedule.target_steps:
            schedule.stop(now_s)
            self._withdrawing = False
            self._drive.point("infuse")
            self._move_done.set()

    def run_until(self, until_s: float, set_clock: Callable[[float], None] | None = None) -> int:
        """Issue every step due by *until_s* without a thread (simulation under a supplied clock).

        *set_clock* moves the supplied clock to each deadline before its pulse, so whatever
        watches the pins sees exact step times. Returns the number of steps issued.
        """
        issued = 0
        with self._lock:
            while True:
                deadline = self._next_deadline()
                if deadline is None or deadline > until_s:
                    break
                if set_clock is not None:
                    set_clock(deadline)
                self._issue(deadline, deadline)
                issued += 1
        if set_clock is not None:
            set_clock(until_s)
        self.heartbeat_s = until_s
        return issued

    def _run(self) -> None:
        reduce_timer_slack()
        clock = self._clock
        while not self._closed:
            now = clock()
            self.heartbeat_s = now
            with self._lock:
                # Issue under the lock, against the schedule as it is now: no pulse can follow
                # a stop() or a rate change that made it no longer due.
                deadline = self._next_deadline()
                if deadline is not None and deadline <= now:
                    self._issue(deadline, now)
                    continue
            if deadline is None:
                self._wake.wait(self.HEARTBEAT_S)
                self._wake.clear()
                continue
            sleep_s = deadline - now - self._spin_s
            if sleep_s > self.SHORT_SLEEP_S:
                # Long waits can be cut short by a rate change (set_rate sets the event); they
                # end a short sleep before the deadline, which a plain sleep then meets closely.
                self._wake.wait(min(sleep_s - self.SHORT_SLEEP_S, self.HEARTBEAT_S))
                self._wake.clear()
                continue
            if sleep_s > 0:
                time.sleep(sleep_s)  # one syscall: the cheapest wait for the next step
            while clock() < deadline:
                pass


class ConstantRate:
    """Step targets at a constant rate from a given step and instant (a plain ``set_rate``)."""

    def __init__(self, first_step: int, now_s: float, steps_per_s: float) -> None:
        if not math.isfinite(steps_per_s) or steps_per_s < 0:
            raise ValueError(
                f"step rate must be a finite number >= 0 steps/s (delivery never reverses), "
                f"not {steps_per_s!r}"
            )
        self._run = (
            StepRun(first_step, None, now_s + 1.0 / steps_per_s, 1.0 / steps_per_s)
            if steps_per_s > 0
            else None
        )

    def run_from(self, step: int) -> StepRun | None:
        return self._run if self._run is not None and self._run.covers(step) else None


class LgpioStepGenerator:
    """STEP pulse trains timed by lgpio's C thread (software-timed in C, not by hardware).

    A Python thread hands lgpio one short pulse train ("chunk") at a time, each covering about
    :attr:`CHUNK_S` of the step targets: the steps due in that span, evenly spaced, no faster than
    the drive allows. Pulse times are therefore good to about one chunk; counts are exact.

    Counting: lgpio reports how much room its queue has (``tx_room``). A chunk counts as issued
    once it has left the queue, so :attr:`steps_issued` never runs ahead of the pin and never goes
    back; it lags the pin by at most the chunks still queued. A :meth:`stop` cancels the queue at
    once (the caller releases the driver first): the chunk that was running counts in full, the
    ones not yet started not at all.
    """

    CHUNK_S = 0.02
    QUEUE_AHEAD = 2
    """Chunks in lgpio's queue at most (the running one included)."""
    MIN_PERIOD_US = 20
    POLL_S = CHUNK_S / 2

    def __init__(
        self,
        drive: SyringeDrive,
        *,
        lgpio_module=None,
        chip_handle: int | None = None,
        clock: Clock = time.monotonic,
        pulse_us: float = 2.0,
        max_rate_steps_per_s: float = 1e6 / MIN_PERIOD_US,
        start_thread: bool = True,
    ) -> None:
        if lgpio_module is None:
            import lgpio as lgpio_module  # Pi only
        self._lgpio = lgpio_module
        self._drive = drive
        self._gpio = drive.step.pin.info.name
        self._gpio_number = int(str(self._gpio).removeprefix("GPIO"))
        if chip_handle is None:
            chip_handle = drive.pin_factory._handle  # gpiozero's LGPIOFactory chip handle
        self._handle = chip_handle
        self._clock = clock
        self._pulse_us = max(1, round(pulse_us))
        self._min_period_us = max(self.MIN_PERIOD_US, math.ceil(1e6 / max_rate_steps_per_s))
        self._lock = threading.Lock()
        self._capacity = lgpio_module.tx_room(chip_handle, self._gpio_number, lgpio_module.TX_PWM)
        self._sent: deque[int] = deque()  # pulses of each chunk handed over, not yet finished
        self._completed = 0
        self._handed = 0
        self._queued_until_s = clock()
        self._targets: StepTargets | None = None
        self._step_run: StepRun | None = None
        self._closed = False
        self.heartbeat_s = clock()
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._loop, name="lgpio-steps", daemon=True)
            self._thread.start()

    @property
    def rate_steps_per_s(self) -> float:
        run = self._step_run
        return 0.0 if run is None or run.period_s <= 0 else 1.0 / run.period_s

    @property
    def steps_issued(self) -> int:
        with self._lock:
            self._retire_finished()
            return self._completed

    @property
    def alive(self) -> bool:
        return not self._closed and (self._thread is None or self._thread.is_alive())

    def set_rate(self, steps_per_s: float) -> None:
        """Infuse at a constant rate from now on (0 stops after the queued chunks)."""
        with self._lock:
            targets = ConstantRate(self._handed + 1, self._clock(), steps_per_s)
        self.follow(targets)

    def follow(self, targets: StepTargets | None) -> None:
        """Follow new step targets from the next chunk on; queued chunks still run out."""
        with self._lock:
            self._targets, self._step_run = targets, None
            self._drive.point("infuse")

    def next_due_s(self) -> float | None:
        with self._lock:
            self._retire_finished()
            if self._sent:
                return self._clock()  # a chunk is on its way
            if self._targets is None:
                return None
            run = self._targets.run_from(self._handed + 1)
            return None if run is None else run.due_s(self._handed + 1)

    def stop(self) -> None:
        """Cancel lgpio's queue now; the running chunk counts in full, the queued ones not."""
        with self._lock:
            self._targets = self._step_run = None
            self._lgpio.tx_pulse(self._handle, self._gpio_number, 0, 0)
            self._retire_finished()
            if self._sent:
                self._completed += self._sent[0]  # it was running: count it in full
            self._sent.clear()
            self._handed = self._completed
            self._queued_until_s = self._clock()

    # -- the queue ----------------------------------------------------------------------------

    def _retire_finished(self) -> None:
        """Chunks that have left lgpio's queue are issued (lock held)."""
        room = self._lgpio.tx_room(self._handle, self._gpio_number, self._lgpio.TX_PWM)
        still_queued = max(0, self._capacity - room)
        while len(self._sent) > still_queued:
            self._completed += self._sent.popleft()

    def _due_before(self, first_step: int, end_s: float, limit: int) -> tuple[int, float | None]:
        """Steps from *first_step* on due before *end_s* (at most *limit*), and the first's time."""
        count, first_due = 0, None
        step = first_step
        while count < limit:
            run = self._step_run
            if run is None or not run.covers(step):
                targets = self._targets
                run = self._step_run = None if targets is None else targets.run_from(step)
            if run is None:
                break
            due = run.due_s(step)
            if due >= end_s:
                break
            if first_due is None:
                first_due = due
            if run.period_s <= 0:
                taken = limit - count
            else:
                last = math.ceil((end_s - due) / run.period_s)  # steps of this run before end
                taken = min(limit - count, last)
                if run.last is not None:
                    taken = min(taken, run.last - step + 1)
            count += taken
            step += taken
        return count, first_due

    def _queue_chunk(self, now_s: float) -> bool:
        """Hand lgpio the next chunk if any step is due in it (lock held); True if one was."""
        start_s = max(self._queued_until_s, now_s)
        end_s = start_s + self.CHUNK_S
        limit = max(1, int(self.CHUNK_S * 1e6 // self._min_period_us))
        pulses, first_due = self._due_before(self._handed + 1, end_s, limit)
        if pulses <= 0 or first_due is None:
            return False
        span_us = (end_s - max(start_s, min(first_due, end_s))) * 1e6
        period_us = max(self._min_period_us, round(span_us / pulses))
        on_us = min(self._pulse_us, period_us // 2)
        self._lgpio.tx_pulse(self._handle, self._gpio_number, on_us, period_us - on_us, 0, pulses)
        self._sent.append(pulses)
        self._handed += pulses
        self._queued_until_s = start_s + pulses * period_us / 1e6
        return True

    def service(self, now_s: float) -> None:
        """Retire finished chunks and keep the queue topped up (one pass of the thread)."""
        with self._lock:
            self._retire_finished()
            if not self._sent:
                self._queued_until_s = max(self._queued_until_s, now_s)
            while len(self._sent) < self.QUEUE_AHEAD and self._queue_chunk(now_s):
                pass
        self.heartbeat_s = now_s

    def _loop(self) -> None:
        while not self._closed:
            self.service(self._clock())
            time.sleep(self.POLL_S)

    def close(self) -> None:
        self.stop()
        self._closed = True
        if self._thread is not None:
            self._thread.join(timeout=2.0)
