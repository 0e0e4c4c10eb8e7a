"""The rig service's core: one object that owns the bench, the therapy engine and the books.

A delivery thread runs the loop: account patient time in the engine, set the step rate from the
delivery plan, read the flow sensor into the flow monitor, raise and clear alarms, commit the
delivery ledger every second, and heartbeat. A watchdog thread disables the stepper if that loop
stalls for more than a second. Every public method is safe to call from the API's threads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hal.balance import BalanceError
from hal.bench import Bench
from hal.config import HardwareConfig
from hal.flow_sensor import FlowSensorError
from rig.common.inputs import InputError
from rig.service.alarm_manager import AlarmManager
from rig.service.books import EventKind, RigStore, RunState, StorageError, iso_utc, utc_now
from rig.service.bridge import BridgeBooks, PendingBridge
from rig.service.config import KioskConfig
from rig.service.flow_monitor import (
    FLOW_CONDITIONS,
    RUNNING_CONDITIONS,
    FlowLimits,
    FlowMonitor,
    flow_alarm_texts,
)
from rig.service.motion import BenchLimits, Motion
from rig.service.records import PendingRecords
from rig.service.selftest import SelfTestReport
from rig.therapy.alarms import AlarmCode, alarm_spec
from rig.therapy.catheter import CatheterContents
from rig.therapy.clocks import PacedClock
from rig.therapy.drugs import check_fill
from rig.therapy.engine import (
    ENGINE_ALARMS,
    EngineEvent,
    GrantedBolus,
    Proposal,
    TherapyEngine,
)
from rig.therapy.plan import build_plan, compile_regimen
from rig.therapy.programs import Program
from rig.therapy.reservoir import (
    DEFAULT_CAPACITY_ML,
    RefillVerdict,
    ReservoirState,
    refill_verdict,
)
from rig.therapy.units import MINUTES_PER_HOUR, UL_PER_ML, volume_ul

log = logging.getLogger("itbrig.service")

LOOP_PERIOD_S = 0.05
SENSOR_PERIOD_S = 0.1
LEDGER_PERIOD_S = 1.0
WATCHDOG_LIMIT_S = 1.0
PEAK_RATE_HORIZON = timedelta(days=8)
"""How far ahead a proposed program is scanned for its highest rate (a week and a day)."""
WATCHDOG_POLL_S = 0.2
STEP_THREAD_LIMIT_S = 2.0
"""The step thread wakes every 50 ms even when idle; silent this long, it has stalled."""
MIN_STEP_TOLERANCE = 10
STEP_TOLERANCE_S = 1.0
"""The motor may lag or lead its step targets by this much (or the minimum) before a trip."""
MOTOR_LAG_HOLD_S = 0.5
BOLUS_BOOKED_UL = 1e-6
"""A bolus is done once the motor owes it less than this."""
ENGINE_STATE_KEY = "engine_state"
CATHETER_STATE_KEY = "catheter"
PATIENT_EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
"""Patient time of a fresh install (a Monday morning)."""


def _jsonable(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in values.items()}


def flow_limits_for(config: HardwareConfig) -> FlowLimits:
    """Flow-monitor windows no shorter than the line physics allows.

    The line's time constant τ = C·R (tubing compliance × catheter resistance) does not compress
    with the clock: after a rate change the monitor waits 7 τ (0.1 % left of the transient) and
    averages over at least 7 τ.
    """
    sim = config.sim
    tau_s = sim.tubing_compliance_ul_per_kpa * sim.catheter_resistance_kpa_min_per_ul * 60.0
    defaults = FlowLimits()
    return FlowLimits(
        settle_bench_s=max(defaults.settle_bench_s, 7 * tau_s),
        min_window_bench_s=max(defaults.min_window_bench_s, 7 * tau_s),
    )


REFILL_MOVING = ("aspirating", "filling")
ASPIRATE_CREEP_ML = 0.2
"""Aspiration slows this far before the books' empty point: the switch then stops it on time."""
ASPIRATE_CREEP_STEPS_PER_S = 100.0
"""At the loop's 50 ms watch, the creep overruns the empty switch by at most 5 steps."""


@dataclass
class RefillJob:
    """A refill through the refill valve: the move under way and what it found."""

    phase: str
    role: str
    volume_ml: float = 0.0
    concentration_ug_per_ml: float = 0.0
    balance_before_g: float | None = None
    steps_before: int = 0
    creeping: bool = False
    withdrawn_ml: float | None = None
    balance_withdrawn_ml: float | None = None
    verdict: dict[str, Any] | None = None
    result: dict[str, Any] | None = None


class StateConflict(InputError):
    """The request is valid but not in the rig's current state (answered 409)."""


class StorageUnavailable(StorageError):
    """The books cannot be written: state changes are refused until they can (answered 507)."""


@dataclass
class LoopStats:
    """How well the delivery loop kept its period since :attr:`since_utc` (reset on request)."""

    since_utc: str = field(default_factory=lambda: iso_utc(utc_now()))
    ticks: int = 0
    max_gap_s: float = 0.0
    """Longest time between the starts of two ticks (the period is LOOP_PERIOD_S)."""
    max_tick_s: float = 0.0
    """Longest tick, from its start to its end."""
    late_ticks: int = 0
    """Ticks that started more than twice the period after the one before."""
    max_wake_late_s: float = 0.0
    """Longest time between when the loop asked to wake and when it ran: what the machine (the
    scheduler, other threads holding the interpreter) added to the gap, apart from the tick."""
    last_start_s: float | None = None

    def woke(self, due_s: float, now_s: float) -> None:
        self.max_wake_late_s = max(self.max_wake_late_s, now_s - due_s)

    def tick(self, started_s: float, ended_s: float) -> None:
        if self.last_start_s is not None:
            gap_s = started_s - self.last_start_s
            self.max_gap_s = max(self.max_gap_s, gap_s)
            if gap_s > 2 * LOOP_PERIOD_S:
                self.late_ticks += 1
        self.last_start_s = started_s
        self.max_tick_s = max(self.max_tick_s, ended_s - started_s)
        self.ticks += 1


@dataclass(frozen=True)
class _Checkpoint:
    """What a request may change in memory, to restore when its books cannot be written."""

    engine: Any
    alarms: Any
    pending_refill: RefillVerdict | None
    reservoir: dict[str, Any] | None
    catheter: CatheterContents
    ledger: tuple[int, datetime, float, float]
    booked_boluses: dict[str, int]


@dataclass
class Telemetry:
    """The latest loop snapshot, for the live stream."""

    bench_s: float = 0.0
    patient_time: str = ""
    expected_ul_per_min: float | None = None
    measured_ul_per_min: float | None = None
    sensor_ul_per_min: float | None = None
    commanded_ul_per_min: float = 0.0
    time_compression_nominal: float = 0.0
    time_compression_effective: float = 0.0
    steps: int = 0
    state: str = "stopped"
    calibration: dict[str, Any] | None = None
    """The calibration run going on (progress, latest sample), else None."""


class RigService:
    """The rig: bench + engine + books + monitors, driven by one delivery thread."""

    def __init__(
        self,
        bench: Bench,
        store: RigStore,
        *,
        time_compression: float,
        notify: Callable[[str], None] | None = None,
        bench_clock: Callable[[], float] = time.monotonic,
        max_bench_flow_ul_per_min: float | None = None,
        reservoir_capacity_ml: float = DEFAULT_CAPACITY_ML,
        kiosk: KioskConfig | None = None,
    ) -> None:
        self.bench = bench
        self.kiosk = kiosk or KioskConfig()
        self._bench_clock = bench_clock
        self.store = store
        self._notify = notify or (lambda _message: None)
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        from rig.service.calibration_jobs import CalibrationJobs  # it builds on this module

        self.calibrations = CalibrationJobs(self)  # puts the calibrations in force first
        self.ul_per_step = bench.ul_per_microstep
        recovered_unclean = not store.was_clean_shutdown()
        saved = store.get_state(ENGINE_STATE_KEY)
        patient_epoch = PATIENT_EPOCH
        if saved is not None:
            patient_epoch = datetime.fromisoformat(saved["updated_at"])
        self.limits = BenchLimits.from_config(
            bench.config, max_bench_flow_ul_per_min, self.ul_per_step
        )
        self.clock = PacedClock(
            time_compression,
            patient_epoch,
            max_bench_ul_per_min=self.limits.max_ul_per_min,
            monotonic=bench_clock,
        )
        if saved is None:
            capacity_ml = reservoir_capacity_ml
            full = ReservoirState(capacity_ml=capacity_ml, volume_ml=capacity_ml)
            self.engine = TherapyEngine.new(self.clock, reservoir=full)
        else:
            self.engine = TherapyEngine.from_dict(saved, self.clock)
        self.clock.rate_at = self._plan_rate_at  # the patient clock is paced by the plan in force
        self.motion = Motion(bench, self.clock, self.engine)
        self._storage_error: StorageError | None = None
        self._storage_failed_at: str | None = None
        self._storage_failed_s: float | None = None
        self._in_transaction = False
        self._after_commit: list[Callable[[], None]] = []
        self.loop_stats = LoopStats()
        self.records = PendingRecords(store, self._storage_failed)
        self.alarms = AlarmManager(
            store,
            bench.buzzer,
            bench.led,
            on_stop_delivery=lambda _code: self._stop_motor(),
            records=self.records,
            patient_epoch=PATIENT_EPOCH,
        )
        self.flow_monitor = FlowMonitor(
            self.ul_per_step, self.clock.time_compression, flow_limits_for(bench.config)
        )
        self._monitored_ul_per_min = 0.0
        self.telemetry = Telemetry()
        self._ledger_steps = bench.stepper.steps_issued
        self._ledger_at = datetime.now(UTC)
        self._ledger_patient_s = self._patient_s()
        self._ledger_due_s = self._bench_clock() + LEDGER_PERIOD_S
        self._sensor_due_s = 0.0
        self._failed_ticks = 0
        self._watchdog_tripped = False
        self._motor_off_since_s: float | None = None
        self.heartbeat_s = self._bench_clock()
        self._loop: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._pending_refill: RefillVerdict | None = None
        self._refill_job: RefillJob | None = None
        self._supply_concentration_ug_per_ml: float | None = None
        self._virtual_tick_s: float | None = None
        self._booked_boluses: dict[str, int] = {}  # engine bolus start → books' bolus id
        self._bolus_owed_ul = 0.0
        self.self_test: SelfTestReport | None = None
        if store.reservoir() is None:
            reservoir = self.engine.state.reservoir
            store.fill_reservoir(
                drug="baclofen",
                concentration_ug_per_ml=500.0,
                volume_ml=reservoir.volume_ml,
                capacity_ml=reservoir.capacity_ml,
                low_threshold_ml=reservoir.low_threshold_ml,
            )
        self._reservoir = store.reservoir()
        self.bridge = BridgeBooks(store)
        self._books_seen = (store.delivered_totals(), self._reservoir)
        self._storage_read_error: str | None = None
        saved_catheter = store.get_state(CATHETER_STATE_KEY)
        self.catheter = (
            CatheterContents.model_validate(saved_catheter)
            if saved_catheter is not None
            else CatheterContents.filled(self._reservoir["concentration_ug_per_ml"])
        )
        if recovered_unclean and saved is not None:
            report = store.recover_after_unclean_stop(patient_s=self._patient_s())
            self._halt()
            self.alarms.raise_condition(
                AlarmCode.POWER_LOSS_RECOVERY,
                f"restarted after an unclean stop; {report.delivered_volume_ul / 1000:.4f} mL "
                "delivered per the ledger; review and resume",
                patient_s=self._patient_s(),
            )
        for row in store.boluses(state="active"):  # still running after a clean restart
            self._booked_boluses[row["params"]["start"]] = row["id"]
        store.mark_running()
        self._save_engine()

    # -- lifecycle ------------------------------------------------------------------------------

    def apply_self_test(self, report: SelfTestReport) -> None:
        """The power-on self-test's verdict, before :meth:`start`: a failure halts delivery and
        raises ``self_test_failed`` naming each failed part; it stays until a restart passes.
        """
        with self._lock:
            self.self_test = report
            self.store.add_event(
                "self_test",
                "self-test passed" if report.passed else report.failure_message(),
                patient_s=self._patient_s(),
                detail=report.to_dict(),
            )
            if report.passed:
                self._set_condition(AlarmCode.SELF_TEST_FAILED, False)
            else:
                self._halt()
                self._set_condition(AlarmCode.SELF_TEST_FAILED, True, report.failure_message())
            self._save_engine()

    def start(self, *, threads: bool = True) -> None:
        """Start the delivery loop and the watchdog (``threads=False``: :meth:`run_virtual`).

        The driver stays released until a step is due. A flow sensor that cannot start does
        not stop the service: its reads fail and the flow monitor raises a sensor fault.
        """
        self.bench.drive.release()
        try:
            self.bench.flow_sensor.start()
        except FlowSensorError as error:
            log.error("flow sensor did not start: %s", error)
        if not threads:
            return
        self._loop = threading.Thread(target=self._run, name="delivery", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._loop.start()
        self._watchdog.start()

    def shutdown(self) -> None:
        """Clean stop: stepper disabled, ledger committed, books marked closed."""
        self._stop_event.set()
        self.calibrations.stop()  # a run going on is cancelled and booked first
        for thread in (self._loop, self._watchdog):
            if thread is not None:
                thread.join(timeout=3.0)
        with self._lock:
            self.bench.stepper.stop()
            self.bench.drive.release()
            self._commit_ledger()
            self._save_engine()
            self.store.mark_clean_shutdown()
        self.bench.buzzer.silence()

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        due = self._bench_clock()
        while not self._stop_event.is_set():
            started = self._bench_clock()
            self.loop_stats.woke(due, started)
            self._run_tick(started)
            ended = self._bench_clock()
            self.loop_stats.tick(started, ended)
            wait_s = max(0.0, LOOP_PERIOD_S - (ended - started))
            due = ended + wait_s
            self._stop_event.wait(wait_s)

    def loop_status(self) -> dict[str, Any]:
        """The delivery loop's timing since the last :meth:`reset_loop_stats` (or the start)."""
        stats = self.loop_stats
        lateness = getattr(self.bench.stepper, "max_lateness_s", None)
        return {
            "period_s": LOOP_PERIOD_S,
            "since": stats.since_utc,
            "ticks": stats.ticks,
            "max_gap_s": stats.max_gap_s,
            "max_tick_s": stats.max_tick_s,
            "late_ticks": stats.late_ticks,
            "max_wake_late_s": stats.max_wake_late_s,
            "max_step_lateness_s": lateness,
        }

    def reset_loop_stats(self) -> None:
        self.loop_stats = LoopStats()
        reset = getattr(self.bench.stepper, "reset_lateness", None)
        if reset is not None:
            reset()

    def _run_tick(self, now_s: float) -> None:
        try:
            self._tick(now_s)
        except Exception:  # the loop must survive anything: the watchdog sees it fail
            self._failed_ticks += 1
            log.exception("delivery loop tick failed (%d in a row)", self._failed_ticks)
            return
        self._failed_ticks = 0
        self.heartbeat_s = self._bench_clock()

    def run_virtual(self, until_s: float, set_clock: Callable[[float], None]) -> None:
        """Run the delivery loop without threads up to bench second *until_s*.

        For a bench on a virtual clock (``build_bench(clock=..., start_stepper=False)``):
        *set_clock* moves that clock; the step generator issues every step at its exact time and
        the loop ticks every :data:`LOOP_PERIOD_S`, as the threads would in real time.
        """
        next_tick_s = self._virtual_tick_s
        if next_tick_s is None:
            next_tick_s = self._bench_clock()
        while next_tick_s <= until_s:
            self.bench.stepper.run_until(next_tick_s, set_clock)
            self._run_tick(next_tick_s)
            self._watchdog_check(next_tick_s)
            next_tick_s += LOOP_PERIOD_S
        self._virtual_tick_s = next_tick_s
        self.bench.stepper.run_until(until_s, set_clock)

    def _tick(self, now_s: float) -> None:
        with self._lock:
            # Every engine event since the last tick, including those raised while an API call
            # advanced the engine.
            self.engine.advance()
            self._forward_engine_events(self.engine.pop_events())
            refilling = self._refill_job is not None and self._refill_job.phase in REFILL_MOVING
            calibrating = self.calibrations.active  # the procedure drives the motor meanwhile
            if refilling:
                self._watch_refill()  # the plan does not move the motor meanwhile
            elif not calibrating:
                self._follow_plan(now_s)
                self._check_motor(now_s)
            if now_s >= self._sensor_due_s:
                self._sensor_due_s = now_s + SENSOR_PERIOD_S
                self._check_switches()
                if not (refilling or calibrating):  # to waste, or the procedure's own flow
                    self._read_flow(now_s)
            if now_s >= self._ledger_due_s:
                self._ledger_due_s = now_s + LEDGER_PERIOD_S
                self._keep_books()
                self._notify("WATCHDOG=1")
            self.alarms.tick()
            self.alarms.idle_led = ("green", None) if self.is_delivering else ("blue", None)

    @property
    def is_delivering(self) -> bool:
        return self.motion.steps_per_s > 0

    def _plan_rate_at(self, moment: datetime) -> tuple[float, datetime | None]:
        plan = self.engine.plan
        return plan.rate_ul_per_h(moment), plan.next_change_after(moment)

    def _follow_plan(self, now_s: float) -> None:
        """The motor on the plan in force; the flow monitor told what the bench now runs."""
        self.motion.follow(self.engine)
        self.motion.power(now_s)
        factor = self.clock.factor_at(self.engine.state.updated_at)
        if factor != self.flow_monitor.time_compression:
            self.flow_monitor.set_time_compression(factor, now_s)
        flow = self.motion.bench_ul_per_min
        if flow != self._monitored_ul_per_min:
            self._monitored_ul_per_min = flow
            self.flow_monitor.set_rate(flow, now_s)

    def _check_motor(self, now_s: float) -> None:
        """The motor keeps to its step targets, or the watchdog stops it.

        A lag that the step generator makes up at once (after the machine paused every thread
        for a moment) is not a fault; one that lasts :data:`MOTOR_LAG_HOLD_S` is.
        """
        if self.motion.targets is None:
            self._motor_off_since_s = None
            return
        lag = self.motion.target_steps(self.engine) - self.bench.stepper.steps_issued
        tolerance = max(MIN_STEP_TOLERANCE, self.motion.steps_per_s * STEP_TOLERANCE_S)
        if abs(lag) <= tolerance:
            self._motor_off_since_s = None
            return
        if self._motor_off_since_s is None:
            self._motor_off_since_s = now_s
        elif now_s - self._motor_off_since_s >= MOTOR_LAG_HOLD_S:
            self._motor_off_since_s = None
            self._trip_watchdog(
                f"the motor is {abs(lag)} steps {'behind' if lag > 0 else 'ahead of'} the "
                f"plan (tolerance {tolerance:.0f})"
            )

    def _read_flow(self, now_s: float) -> None:
        steps = self.bench.stepper.steps_issued
        try:
            reading = self.bench.flow_sensor.read()
        except FlowSensorError as error:
            status = self.flow_monitor.observe_error(now_s, str(error))
            self.telemetry.sensor_ul_per_min = None
        else:
            flow_ul_per_min = self.calibrations.corrected_flow_ul_per_min(reading.flow_ul_per_min)
            status = self.flow_monitor.observe(now_s, steps, flow_ul_per_min, reading.air_in_line)
            self.telemetry.sensor_ul_per_min = flow_ul_per_min
        for code in FLOW_CONDITIONS:
            if code.value not in status.judged:  # unknown now: keep what was last judged
                continue
            present = code.value in status.conditions
            message, detail = flow_alarm_texts(code, status) if present else ("", "")
            self._set_condition(code, present, message, detail)
        self._sync_engine_alarms()
        telemetry = self.telemetry
        telemetry.bench_s = now_s
        telemetry.patient_time = self.engine.state.updated_at.isoformat()
        telemetry.expected_ul_per_min = status.expected_ul_per_min
        telemetry.measured_ul_per_min = status.measured_ul_per_min
        telemetry.commanded_ul_per_min = self.motion.bench_ul_per_min
        telemetry.time_compression_nominal = self.clock.time_compression_nominal
        telemetry.time_compression_effective = self.flow_monitor.time_compression
        telemetry.steps = steps
        telemetry.state = self.state_name

    def _check_switches(self) -> None:
        estop_pressed = self.bench.estop.is_pressed
        # An empty syringe is the point of a refill's aspiration, not an alarm.
        at_end = (
            self.bench.limits.at_empty
            and self._pending_refill is None
            and (self._refill_job is None or self._refill_job.phase == "filled")
        )
        self._set_condition(AlarmCode.EMERGENCY_STOP, estop_pressed, "emergency stop pressed")
        self._set_condition(AlarmCode.PLUNGER_AT_END, at_end, "bench syringe is empty")

    def _set_condition(
        self, code: AlarmCode, present: bool, message: str = "", detail: str = ""
    ) -> None:
        """A service alarm condition now: raise it (alarm manager and engine) or let it go."""
        if present:
            if self.alarms.raise_condition(
                code, message, patient_s=self._patient_s(), detail=detail
            ):
                self.engine.raise_alarm(code, message)
        elif self.alarms.condition_present(code):
            self.alarms.condition_gone(code, patient_s=self._patient_s())

    def _forward_engine_events(self, events: list[EngineEvent]) -> None:
        for event in events:
            if event.code is None:
                continue
            if event.kind == "alarm_raised" and event.code in ENGINE_ALARMS | {"dose_limit"}:
                self.alarms.raise_condition(
                    event.code,
                    event.detail or alarm_spec(event.code).meaning,
                    patient_s=self._patient_s_at(event.at),
                )
            elif event.kind == "alarm_cleared" and event.code in ENGINE_ALARMS:
                self.alarms.condition_gone(event.code)

    def _sync_engine_alarms(self) -> None:
        """Service alarms the manager has cleared (gone and acknowledged) leave the engine too."""
        active = set(self.alarms.active_codes)
        for alarm in self.engine.state.alarms:
            if alarm.code not in ENGINE_ALARMS and alarm.code not in active:
                self.engine.clear_alarm(alarm.code)

    def _stop_motor(self) -> None:
        self.motion.stop()
        self.motion.forget()

    # -- books ------------------------------------------------------------------------------------

    def _patient_s(self) -> float:
        return self._patient_s_at(self.clock.now())

    @staticmethod
    def _patient_s_at(moment: datetime) -> float:
        return (moment - PATIENT_EPOCH).total_seconds()

    def _commit_ledger(self) -> None:
        """Book what the motor delivered since the last commit, and close the patient boluses
        that have ended, in one transaction; memory follows once it is written."""
        steps_now = self.bench.stepper.steps_issued
        refilling = self._refill_job is not None and self._refill_job.phase in REFILL_MOVING
        if refilling or self.calibrations.active:
            self._ledger_steps = steps_now  # a refill or calibration sends nothing to the patient
        steps = max(0, steps_now - self._ledger_steps)
        patient_end_s = max(self._patient_s(), self._ledger_patient_s)
        volume_ul = steps * self.ul_per_step
        bolus_id, bolus_ul, owed_ul = self._bolus_share(
            self._ledger_patient_s, patient_end_s, volume_ul
        )
        catheter = self.catheter.pushed(volume_ul, self._reservoir["concentration_ug_per_ml"])
        with self.store.transaction("commit the delivery ledger"):
            self.store.record_delivery(
                start_at=self._ledger_at,
                patient_start_s=self._ledger_patient_s,
                patient_end_s=patient_end_s,
                steps=steps,
                basal_ul=volume_ul - bolus_ul,
                bolus_ul=bolus_ul,
                bolus_id=bolus_id,
                state={CATHETER_STATE_KEY: catheter.model_dump(mode="json")},
            )
            closed = self._close_patient_boluses(owed_ul)
        self.catheter = catheter
        self._ledger_steps = steps_now
        self._ledger_at = datetime.now(UTC)
        self._ledger_patient_s = patient_end_s
        self._bolus_owed_ul = owed_ul
        for key in closed:
            del self._booked_boluses[key]
            self._bolus_owed_ul = 0.0

    # -- patient boluses on the books ---------------------------------------------------------

    def _running_patient_bolus(self) -> tuple[int, GrantedBolus] | None:
        """The patient bolus the books hold as active, with the engine's record of it."""
        for granted in self.engine.state.patient_boluses:
            bolus_id = self._booked_boluses.get(granted.start.isoformat())
            if bolus_id is not None:
                return bolus_id, granted
        return None

    def _bolus_share(
        self, patient_start_s: float, patient_end_s: float, volume_ul: float
    ) -> tuple[int | None, float, float]:
        """(bolus id, µL of the interval's *volume_ul* that the running patient bolus delivered,
        µL of it still owed).

        The plan says how much of the bolus fell in the span; what the motor has not yet
        delivered of it (a step thread a moment late) is owed to the next interval, so the bolus
        is booked to the microlitre the motor gave it.
        """
        running = self._running_patient_bolus()
        if running is None:
            return None, 0.0, self._bolus_owed_ul
        bolus_id, granted = running
        start_s = self._patient_s_at(granted.start)
        end = min(granted.end, granted.cancelled_at or granted.end)
        overlap_s = min(patient_end_s, self._patient_s_at(end)) - max(patient_start_s, start_s)
        bolus_ul_per_s = self._patient_bolus_volume_ul(granted) / (granted.duration_min * 60)
        due_ul = max(0.0, overlap_s) * bolus_ul_per_s + self._bolus_owed_ul
        share_ul = min(volume_ul, due_ul)
        return bolus_id, share_ul, due_ul - share_ul

    def _patient_bolus_volume_ul(self, granted: GrantedBolus) -> float:
        program = self.engine.state.program
        concentration = program.concentration_ug_per_ml if program else 0.0
        return volume_ul(granted.dose_ug, concentration) if concentration else 0.0

    def _book_patient_bolus(self, role: str) -> int:
        """A granted patient bolus goes on the books as active at once.

        The one before it has ended in the plan (the lockout is at least a bolus long) but may
        still be active on the books while the motor owes it a fraction of a step: it is closed
        first (the books hold one active bolus at a time).
        """
        for granted in self.engine.state.patient_boluses[:-1]:
            key = granted.start.isoformat()
            earlier = self._booked_boluses.pop(key, None)
            if earlier is None:
                continue
            if granted.cancelled_at is not None:
                self.store.cancel_bolus(earlier, patient_s=self._patient_s(), reason="cancelled")
            else:
                self.store.finish_bolus(earlier, patient_s=self._patient_s())
            self._bolus_owed_ul = 0.0
        granted = self.engine.state.patient_boluses[-1]
        bolus_id = self.store.request_bolus(
            "patient",
            self._patient_bolus_volume_ul(granted),
            role=role,
            patient_s=self._patient_s(),
            params={
                "start": granted.start.isoformat(),
                "dose_ug": granted.dose_ug,
                "duration_min": granted.duration_min,
            },
        )
        self.store.start_bolus(bolus_id, role=role, patient_s=self._patient_s())
        self._booked_boluses[granted.start.isoformat()] = bolus_id
        return bolus_id

    def _close_patient_boluses(self, owed_ul: float) -> list[str]:
        """Book as done or cancelled the active patient boluses that the engine has ended or
        cancelled; returns their keys (the caller forgets them once this is written)."""
        now = self.engine.state.updated_at
        closed = []
        for granted in self.engine.state.patient_boluses:
            key = granted.start.isoformat()
            bolus_id = self._booked_boluses.get(key)
            if bolus_id is None:
                continue
            if granted.cancelled_at is not None:
                self.store.cancel_bolus(
                    bolus_id, patient_s=self._patient_s(), reason="delivery stopped"
                )
            elif granted.end <= now and owed_ul < BOLUS_BOOKED_UL:
                self.store.finish_bolus(bolus_id, patient_s=self._patient_s())
            else:
                continue
            closed.append(key)
        return closed

    def _save_engine(self) -> None:
        self.store.set_state({ENGINE_STATE_KEY: self.engine.to_dict()})

    def _changed(self) -> None:
        """After any state change: book it at once; the motor follows once it is written."""
        self._commit_ledger()
        self._save_engine()
        self._after_commit_do(lambda: self._follow_plan(self._bench_clock()))

    def _keep_books(self) -> None:
        """The loop's periodic commit; while the books cannot be written, a retry of everything
        that waits for them."""
        if self._storage_error is not None:
            self._retry_storage()
            return
        try:
            self._commit_ledger()
            self._save_engine()
        except StorageError as error:
            self._storage_failed(error)

    # -- storage failure ------------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        """The lock every request and the delivery loop hold while they act: hold it to read
        or change several things at one instant (the training desk does)."""
        return self._lock

    @property
    def storage_ok(self) -> bool:
        return self._storage_error is None

    def _storage_failed(self, error: StorageError) -> None:
        """The books cannot be written: stop delivery, raise the storage alarm (sounded and
        shown without the books) and refuse state changes until they can be written again."""
        if isinstance(error, StorageUnavailable):
            return
        with self._lock:
            if self._storage_error is not None:
                return
            self._storage_error = error
            self._stop_motor()
            self._storage_failed_at = iso_utc(utc_now())
            self._storage_failed_s = self._bench_clock()
            log.error("books cannot be written (%s): delivery stopped, changes refused", error)
            message = f"the books cannot be written: {error}"
            patient_s = self._patient_s()
            self.records.write(
                "record the storage failure",
                lambda: self.store.add_event(
                    EventKind.STORAGE,
                    f"storage failure: {error}; delivery stopped, changes refused",
                    patient_s=patient_s,
                    detail={"kind": error.kind, "sqlite_error": error.sqlite_error},
                ),
            )
            self._set_condition(AlarmCode.STORAGE_FAILURE, True, message[:500])
            if not self.engine.state.halted:
                self.engine.halt()

    def _retry_storage(self) -> None:
        """Write what waited, then the ledger and the engine; all written: storage is back."""
        if not self.records.flush():
            return
        try:
            self._commit_ledger()
            self._save_engine()
        except StorageError as error:
            self._storage_error = error
            return
        failed_for_s = self._bench_clock() - (self._storage_failed_s or self._bench_clock())
        late, dropped = self.records.written_late, self.records.dropped
        self.records.written_late = self.records.dropped = 0
        self._storage_error = None
        self._storage_failed_at = self._storage_failed_s = None
        lost = f"; {dropped} further records could not be kept" if dropped else ""
        log.warning("books writable again after %.1f s", failed_for_s)
        self.records.write(
            "record that the books are writable again",
            lambda: self.store.add_event(
                EventKind.STORAGE,
                f"books writable again after {failed_for_s:.1f} bench s; {late} records written "
                f"late{lost}; delivery stays stopped until started",
                patient_s=self._patient_s(),
                detail={"written_late": late, "dropped": dropped},
            ),
        )
        self._set_condition(AlarmCode.STORAGE_FAILURE, False)

    def storage_status(self) -> dict[str, Any]:
        error = self._storage_error
        return {
            "ok": error is None,
            "error": None if error is None else str(error),
            "kind": None if error is None else error.kind,
            "failed_since": self._storage_failed_at,
            "pending_records": self.records.pending,
        }

    # -- changes: written first, applied once written ----------------------------------------

    @contextmanager
    def transaction(self, what: str) -> Iterator[None]:
        """One change requested from outside: every write it makes (the caller's audit entry
        included) is one transaction of the books; what it changed in memory is rolled back if
        anything fails, and the motor, the clock and the bench act only once it is written.

        Refused with :class:`StorageUnavailable` while the books cannot be written. A write
        that fails here stops delivery and raises the storage alarm (:meth:`_storage_failed`).
        """
        with self._lock:
            if self._in_transaction:
                yield
                return
            if self._storage_error is not None:
                raise StorageUnavailable(
                    "changes are refused until the books can be written again (storage "
                    f"failure since {self._storage_failed_at}, {self._storage_error.kind}: see "
                    "storage in GET /api/status); delivery is stopped",
                    kind="unavailable",
                )
            checkpoint = self._checkpoint()
            self._in_transaction = True
            self._after_commit = []
            try:
                with self.store.transaction(what):
                    yield
            except BaseException as error:
                self._in_transaction = False
                self._after_commit = []
                self._rollback(checkpoint)
                if isinstance(error, StorageError):
                    self._storage_failed(error)
                raise
            self._in_transaction = False
            actions, self._after_commit = self._after_commit, []
            for action in actions:
                action()

    def _after_commit_do(self, action: Callable[[], None]) -> None:
        """Run *action* once the change being made is written (at once outside a change)."""
        if self._in_transaction:
            self._after_commit.append(action)
        else:
            action()

    def _checkpoint(self) -> _Checkpoint:
        return _Checkpoint(
            engine=self.engine.checkpoint(),
            alarms=self.alarms.checkpoint(),
            pending_refill=self._pending_refill,
            reservoir=self._reservoir,
            catheter=self.catheter,
            ledger=(
                self._ledger_steps,
                self._ledger_at,
                self._ledger_patient_s,
                self._bolus_owed_ul,
            ),
            booked_boluses=dict(self._booked_boluses),
        )

    def _rollback(self, checkpoint: _Checkpoint) -> None:
        self.engine.rollback(checkpoint.engine)
        self.alarms.rollback(checkpoint.alarms)
        self._pending_refill = checkpoint.pending_refill
        self._reservoir = checkpoint.reservoir
        self.catheter = checkpoint.catheter
        (
            self._ledger_steps,
            self._ledger_at,
            self._ledger_patient_s,
            self._bolus_owed_ul,
        ) = checkpoint.ledger
        self._booked_boluses = dict(checkpoint.booked_boluses)

    # -- watchdog -------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop_event.wait(WATCHDOG_POLL_S):
            self._watchdog_check(self._bench_clock())

    def _watchdog_check(self, now_s: float) -> None:
        """Trip on a delivery loop that stalls or keeps failing, or a step thread that stalls or
        died; let the condition go once all is well again (the alarm stays until acknowledged)."""
        stalled_s = now_s - self.heartbeat_s
        stepper = self.bench.stepper
        problem = None
        if stalled_s > WATCHDOG_LIMIT_S:
            failed = f"; {self._failed_ticks} ticks failed" if self._failed_ticks else ""
            problem = f"the delivery loop has not completed a tick for {stalled_s:.1f} s{failed}"
        elif not stepper.alive:
            problem = "the step generator's thread has stopped"
        elif now_s - stepper.heartbeat_s > STEP_THREAD_LIMIT_S:
            problem = f"the step generator has been silent for {now_s - stepper.heartbeat_s:.1f} s"
        if problem is not None:
            if not self._watchdog_tripped:
                self._trip_watchdog(problem)
        elif self._watchdog_tripped:
            self._watchdog_tripped = False
            with self._lock:
                self._set_condition(AlarmCode.WATCHDOG, False)

    def _trip_watchdog(self, problem: str) -> None:
        """Release the motor first, then stop the pulses, then raise the alarm."""
        self._watchdog_tripped = True
        self.motion.stop()
        log.error("watchdog: %s; stepper disabled", problem)
        with self._lock:
            self.motion.forget()
            self._set_condition(AlarmCode.WATCHDOG, True, problem)

    # -- commands (called by the API) -------------------------------------------------------

    @property
    def state_name(self) -> str:
        if AlarmCode.POWER_LOSS_RECOVERY in self.alarms.active_codes:
            return "recovery"
        if self.calibrations.active:
            return "calibrating"
        state = self.engine.state
        if state.halted or state.program is None or state.program.mode == "stopped":
            return "stopped"
        return "running"

    def _halt(self) -> None:
        state = self.engine.state
        if not state.halted:
            self.engine.halt()
        self._stop_motor()

    def propose(self, program: Program) -> Proposal:
        with self._lock:
            self._check_bench_can_run(program)
            return self.engine.propose(program)

    def _check_bench_can_run(self, program: Program) -> None:
        """Refuse a program whose highest rate the bench could not run even at ×1."""
        regimen = compile_regimen(program)
        now = self.engine.state.updated_at
        segments = build_plan(regimen, now).segments_between(now, now + PEAK_RATE_HORIZON)
        peak_ul_per_h = max((segment.rate_ul_per_h for segment in segments), default=0.0)
        block = regimen.patient_bolus
        if block is not None:
            bolus_ul = volume_ul(block.dose_ug, regimen.concentration_ug_per_ml)
            peak_ul_per_h += bolus_ul / (block.duration_min / MINUTES_PER_HOUR)
        limit = self.limits.max_ul_per_min
        if peak_ul_per_h / MINUTES_PER_HOUR > limit:
            raise InputError(
                f"program: its highest rate, {peak_ul_per_h:.0f} µL/h, needs "
                f"{peak_ul_per_h / MINUTES_PER_HOUR:.0f} µL/min on the bench even at ×1; "
                f"{self.limits.limiting} allows {limit:.0f} µL/min"
            )

    def confirm(self, proposal_id: str, accept_warnings: bool, role: str) -> None:
        with self.transaction("confirm the program"):
            self.engine.confirm(proposal_id, accept_warnings)
            program = self.engine.state.program
            assert program is not None
            self.store.add_program(
                program.model_dump(mode="json"),
                role=role,
                summary=f"{program.mode} {program.max_daily_total_ug():g} ug/day",
                patient_s=self._patient_s(),
            )
            self._after_commit_do(self.bridge.confirmed(program, role, self._patient_s()))
            self._changed()

    def start_delivery(self, role: str) -> None:
        with self.transaction("start delivery"):
            if self.alarms.condition_present(AlarmCode.SELF_TEST_FAILED):
                raise StateConflict(
                    "state: delivery is blocked: the power-on self-test failed "
                    f"({self.self_test.failure_message() if self.self_test else 'see alarms'}); "
                    "fix the part and restart the rig service"
                )
            if AlarmCode.POWER_LOSS_RECOVERY in self.alarms.active_codes:
                raise StateConflict(
                    "state: the rig is in power-loss recovery; review and confirm with "
                    "POST /api/recovery/resume"
                )
            if self.bridge.pending is not None:
                raise StateConflict(self.bridge.pending.start_refusal())
            try:
                rechecked = self.alarms.recheck_on_start(RUNNING_CONDITIONS)
            except ValueError as error:
                raise StateConflict(str(error)) from None
            for code in rechecked:
                self.engine.clear_alarm(code)  # the motor runs again to judge it
            try:
                self.engine.resume()
            except InputError as error:
                raise StateConflict(f"state: cannot start: {error}") from None
            self.store.set_run_state(RunState.RUNNING, role=role, patient_s=self._patient_s())
            self._changed()

    def stop_delivery(self, role: str) -> None:
        with self.transaction("stop delivery"):
            self._halt()
            self.store.set_run_state(RunState.STOPPED, role=role, patient_s=self._patient_s())
            self._changed()

    def resume_after_recovery(self, role: str) -> None:
        with self.transaction("resume after power-loss recovery"):
            if AlarmCode.POWER_LOSS_RECOVERY not in self.alarms.active_codes:
                raise StateConflict("state: no power-loss recovery is pending")
            if self.bridge.pending is not None:
                raise StateConflict(self.bridge.pending.start_refusal())
            self.alarms.condition_gone(AlarmCode.POWER_LOSS_RECOVERY)
            self.alarms.acknowledge(role=role)
            self._sync_engine_alarms()
            try:
                self.engine.resume()
            except InputError as error:
                raise StateConflict(f"state: cannot resume: {error}") from None
            self.store.set_run_state(RunState.RUNNING, role=role, patient_s=self._patient_s())
            self._changed()

    def request_patient_bolus(self, role: str = "trainee") -> dict[str, Any]:
        """The patient's button: granted or refused, the request and its answer go on the
        books (the event log; a grant also in the bolus table) before the motor moves."""
        with self.transaction("record the patient bolus request"):
            if self.alarms.blocks_bolus():
                active = ", ".join(self.alarms.active_codes)
                answer = {"granted": False, "reason": "alarm_active",
                          "message": f"an alarm is active ({active})"}  # fmt: skip
                self._book_bolus_request(answer, role)
                return answer
            self._commit_ledger()  # what came before the bolus is basal
            decision = self.engine.request_patient_bolus()
            self._forward_engine_events(self.engine.pop_events())
            answer = decision.model_dump(mode="json")
            if decision.granted:
                answer["bolus_id"] = self._book_patient_bolus(role)
            self._book_bolus_request(answer, role)
            self._changed()
            return answer

    def _book_bolus_request(self, answer: dict[str, Any], role: str) -> None:
        """The event of a patient-bolus request: granted (with its bolus id) or refused, why."""
        if answer["granted"]:
            message = f"patient bolus request granted: {answer['message']}"
        else:
            message = f"patient bolus request refused ({answer['reason']}): {answer['message']}"
        self.store.add_event(
            EventKind.BOLUS,
            message,
            role=role,
            patient_s=self._patient_s(),
            detail={
                "change": "request",
                "granted": answer["granted"],
                "reason": answer.get("reason"),
                "bolus_id": answer.get("bolus_id"),
            },
        )

    def acknowledge(self, alarm_id: int | None, role: str) -> list[int]:
        with self.transaction("acknowledge alarms"):
            ids = self.alarms.acknowledge(alarm_id, role=role, patient_s=self._patient_s())
            self._sync_engine_alarms()
            self._save_engine()
            return ids

    def silence(self, duration_s: float, role: str) -> float:
        with self.transaction("silence alarms"):
            return self.alarms.silence(duration_s, role=role, patient_s=self._patient_s())

    def silence_while_unwritable(self, duration_s: float, role: str) -> float:
        """The alarm sound paused while the books cannot be written (recorded once they can)."""
        return self.alarms.silence_while_unwritable(
            duration_s, role=role, patient_s=self._patient_s()
        )

    def refill_withdrawn(self, withdrawn_ml: float, role: str = "clinician") -> RefillVerdict:
        with self.transaction("record the withdrawn volume"):
            reservoir = self.engine.state.reservoir
            verdict = refill_verdict(reservoir.volume_ml, withdrawn_ml, reservoir.capacity_ml)
            self._pending_refill = verdict
            self.store.add_event(
                EventKind.RESERVOIR,
                f"refill: {withdrawn_ml:g} mL withdrawn; {verdict.explanation}",
                role=role,
                patient_s=self._patient_s(),
                detail={"withdrawn_ml": withdrawn_ml, "significant": verdict.significant}
                | verdict.model_dump(include={"difference_ml", "causes"}),
            )
            if verdict.significant:
                self.alarms.raise_condition(
                    AlarmCode.REFILL_DISCREPANCY, verdict.explanation, patient_s=self._patient_s()
                )
                self.alarms.condition_gone(AlarmCode.REFILL_DISCREPANCY)
            return verdict

    def refill_fill(
        self, volume_ml: float, concentration_ug_per_ml: float, role: str
    ) -> dict[str, Any]:
        """The reservoir is filled with *volume_ml* at *concentration_ug_per_ml* (checked
        against the drug library; the program may say otherwise).

        With a refill valve the rig draws the volume from the supply itself: the answer says
        ``phase: filling`` and the status's ``refill`` tells when it is done. Without one the
        syringe was filled by hand (on the simulated bench, by the simulated trainer).
        """
        with self.transaction("record the fill"):
            if self._pending_refill is None:
                raise StateConflict(
                    "state: enter the withdrawn volume first (POST /api/refill/withdrawn)"
                )
            program = self.engine.state.program
            drug = program.drug if program else self._reservoir["drug"]
            check_fill(self.engine.library, drug, concentration_ug_per_ml)
            capacity_ml = self.engine.state.reservoir.capacity_ml
            if not 0 < volume_ml <= capacity_ml:
                raise InputError(
                    f"volume_ml: {volume_ml:g} mL does not fit; allowed more than 0 and up to "
                    f"{capacity_ml:g} mL"
                )
            if self.bench.refill_valve is None:
                sim = self.bench.sim
                if sim is not None:  # the simulated trainer's hands, once the books have it
                    self._after_commit_do(lambda: sim.bench.fill(volume_ml))
                return self._fill_done(volume_ml, concentration_ug_per_ml, role)
            self._refill_ready_to_move()
            steps = round(volume_ml * UL_PER_ML / self.ul_per_step)
            self._start_refill_move(
                RefillJob("filling", role, volume_ml, concentration_ug_per_ml), steps, True
            )
            return {"phase": "filling", "volume_ml": volume_ml}

    def refill_aspirate(self, role: str) -> dict[str, Any]:
        """Empty the reservoir to the waste cup through the refill valve; the status's
        ``refill`` gives the withdrawn volume (steps and balance) and the verdict when done."""
        with self.transaction("start the aspiration"):
            if self.bench.refill_valve is None:
                raise StateConflict(
                    "refill: this bench has no refill valve; empty the syringe by hand and "
                    "enter the withdrawn volume (POST /api/refill/withdrawn)"
                )
            self._refill_ready_to_move()
            balance_g = self._balance_mass_g()
            # Fast to just short of what the books say is left, then slowly onto the switch.
            left_ml = (self.store.reservoir() or self._reservoir)["volume_ml"]
            fast_steps = round((left_ml - ASPIRATE_CREEP_ML) * UL_PER_ML / self.ul_per_step)
            job = RefillJob("aspirating", role, balance_before_g=balance_g)
            self._start_refill_move(job, max(0, fast_steps), False)
            return {"phase": "aspirating"}

    def _refill_ready_to_move(self) -> None:
        if self.state_name != "stopped":
            raise StateConflict("state: stop delivery before the refill (POST /api/stop)")
        if self._refill_job is not None and self._refill_job.phase in REFILL_MOVING:
            raise StateConflict(f"refill: the rig is {self._refill_job.phase}; wait for it")

    def _start_refill_move(self, job: RefillJob, steps: int, withdraw: bool) -> None:
        """Valve to the refill port, driver on, and the move; the loop watches it end."""
        valve = self.bench.refill_valve
        assert valve is not None
        self._commit_ledger()  # refill moves are not delivery: the ledger skips them
        self.store.add_event(
            "refill", f"refill valve open: {job.phase}", role=job.role, patient_s=self._patient_s()
        )

        def start() -> None:  # the hardware moves once the books have it
            job.steps_before = self.bench.stepper.steps_issued
            self._ledger_steps = job.steps_before
            valve.on()
            self.bench.drive.energise()
            max_rate = self.bench.config.drive.max_rate_steps_per_s
            self.bench.stepper.move(steps, max_rate, withdraw=withdraw)
            self._refill_job = job

        self._after_commit_do(start)

    def _watch_refill(self) -> None:
        """Finish a refill move once it has ended (or the empty switch says the syringe is)."""
        job = self._refill_job
        if job is None or job.phase not in REFILL_MOVING:
            return
        stepper = self.bench.stepper
        at_empty = job.phase == "aspirating" and self.bench.limits.at_empty
        if not (at_empty or stepper.wait_move(0)):
            return
        if job.phase == "aspirating" and not at_empty and not job.creeping:
            job.creeping = True  # the rest at a creep, so the switch stops it within a step
            creep_steps = round(2 * ASPIRATE_CREEP_ML * UL_PER_ML / self.ul_per_step)
            stepper.move(creep_steps, ASPIRATE_CREEP_STEPS_PER_S)
            return
        stepper.stop()
        self.bench.drive.release()
        assert self.bench.refill_valve is not None
        self.bench.refill_valve.off()
        moved = stepper.steps_issued - job.steps_before
        self.motion.zero_ul -= moved * self.ul_per_step  # the motor's count moved off the plan
        self._ledger_steps = stepper.steps_issued
        self.flow_monitor.restart(self._bench_clock())
        if job.phase == "aspirating":
            job.withdrawn_ml = moved * self.ul_per_step / UL_PER_ML
            balance_g = self._balance_mass_g()
            if balance_g is not None and job.balance_before_g is not None:
                job.balance_withdrawn_ml = (
                    balance_g - job.balance_before_g
                ) / self.bench.config.sim.fluid_density_g_per_ml
            job.verdict = self.refill_withdrawn(job.withdrawn_ml).model_dump(mode="json")
            job.phase = "aspirated"
        else:
            job.result = self._fill_done(job.volume_ml, job.concentration_ug_per_ml, job.role)
            job.phase = "filled"
        self.store.add_event(
            "refill",
            f"refill valve closed: {job.phase}",
            role=job.role,
            patient_s=self._patient_s(),
        )

    def _balance_mass_g(self) -> float | None:
        balance = self.bench.balance
        if balance is None:
            return None
        try:
            return balance.read_immediate().mass_g
        except BalanceError:
            return None

    def _fill_done(
        self, volume_ml: float, concentration_ug_per_ml: float, role: str
    ) -> dict[str, Any]:
        """The books after a fill: engine reservoir, what the syringe really holds, forecast."""
        program = self.engine.state.program
        drug = program.drug if program else self._reservoir["drug"]
        old_concentration = program.concentration_ug_per_ml if program else None
        actual = self._supply_concentration_ug_per_ml or concentration_ug_per_ml
        self._commit_ledger()  # what went before the refill left at the old concentration
        status = self.engine.set_reservoir(volume_ml)
        self._reservoir = self.store.fill_reservoir(
            drug=drug,
            concentration_ug_per_ml=actual,
            volume_ml=volume_ml,
            capacity_ml=status.reservoir.capacity_ml,
            low_threshold_ml=status.reservoir.low_threshold_ml,
            role=role,
            patient_s=self._patient_s(),
        )
        self._forward_engine_events(self.engine.pop_events())
        self._pending_refill = None
        changed = old_concentration is not None and old_concentration != concentration_ug_per_ml
        if changed:  # the line holds the old drug: stopped until a bridge (or no bridge)
            if self.state_name == "running":
                self.store.set_run_state(RunState.STOPPED, role=role, patient_s=self._patient_s())
            self._halt()
            pending = PendingBridge(
                old_concentration_ug_per_ml=old_concentration,
                new_concentration_ug_per_ml=concentration_ug_per_ml,
                filled_at=self.engine.state.updated_at,
            )
            self._after_commit_do(self.bridge.filled(pending, role, self._patient_s()))
        self._changed()
        forecast = self.engine.status().settings.reservoir
        return {
            "volume_ml": volume_ml,
            "concentration_ug_per_ml": concentration_ug_per_ml,
            "actual_concentration_ug_per_ml": actual,
            "concentration_changed": changed,
            "bridge_bolus_offered": changed,
            "old_concentration_ug_per_ml": old_concentration,
            "low_alarm_at": forecast.low_alarm_at,
            "empty_at": forecast.empty_at,
        }

    def record_no_bridge(self, reason: str, role: str) -> None:
        """Start without a bridge bolus after a concentration change, the reason on the books."""
        with self.transaction("record no bridge bolus"):
            self._after_commit_do(self.bridge.no_bridge(reason, role, self._patient_s()))

    def set_time_compression(self, factor: float, role: str = "clinician") -> None:
        """A new nominal factor; the effective one stays within the bench's limits."""
        with self.transaction("set the time compression"):
            self.engine.advance()
            old = self.clock.time_compression_nominal
            self.store.add_event(
                "settings",
                f"time compression x{old:g} -> x{factor:g}",
                role=role,
                patient_s=self._patient_s(),
                detail={"time_compression": factor},
            )
            self._commit_ledger()
            self._save_engine()
            self._after_commit_do(lambda: self.clock.set_time_compression(factor))
            self._after_commit_do(lambda: self._follow_plan(self._bench_clock()))

    def status(self) -> dict[str, Any]:
        with self._lock:
            therapy = self.engine.status()
            try:  # what the books say; their last answer if they cannot be read now
                self._books_seen = (self.store.delivered_totals(), self.store.reservoir())
            except StorageError as error:
                self._storage_read_error = str(error)
            else:
                self._storage_read_error = None
            (steps, volume_ul), books_reservoir = self._books_seen
            rate_ul_per_h = therapy.rate_ul_per_h_now if not therapy.halted else 0.0
            return {
                "training_notice": "Training device — not for clinical use",
                "state": self.state_name,
                "hal": self.bench.kind,
                "self_test_passed": None if self.self_test is None else self.self_test.passed,
                "kiosk": self.kiosk.model_dump(),
                "time_compression": self.clock.time_compression_nominal,
                "clock": self._clock_status(),
                "patient_time": therapy.now,
                "therapy": therapy.model_dump(mode="json"),
                "rates": {
                    "dose_ug_per_day": therapy.settings.daily_dose_ug_per_day,
                    "rate_ul_per_h": rate_ul_per_h,
                    "rate_ml_per_day": rate_ul_per_h * 24 / 1000,
                    "bench_ul_per_min": self.motion.bench_ul_per_min,
                    "bench_steps_per_s": self.motion.steps_per_s,
                },
                "alarms": self.alarms.active_alarms(),
                "silence_remaining_s": self.alarms.silence_remaining_s(),
                "delivered": {
                    "steps": steps,
                    "volume_ml": volume_ul / 1000,
                    "books_volume_ml": therapy.delivered_ul / 1000,
                    "books_dose_ug": therapy.delivered_ug,
                    "patient_ug": self.catheter.patient_ug,
                },
                "reservoir": self._reservoir_status(books_reservoir),
                "refill": self._refill_status(),
                "catheter": self.bridge.catheter_status(),
                "flow": {
                    "expected_ul_per_min": self.telemetry.expected_ul_per_min,
                    "measured_ul_per_min": self.telemetry.measured_ul_per_min,
                    "sensor_ul_per_min": self.telemetry.sensor_ul_per_min,
                },
                "storage": {**self.storage_status(), "read_error": self._storage_read_error},
                "loop": self.loop_status(),
            }

    def _refill_status(self) -> dict[str, Any]:
        """The refill under way or last done through the valve (None: by hand)."""
        job = self._refill_job
        return {
            "valve": self.bench.refill_valve is not None,
            "phase": None if job is None else job.phase,
            "withdrawn_ml": None if job is None else job.withdrawn_ml,
            "balance_withdrawn_ml": None if job is None else job.balance_withdrawn_ml,
            "verdict": None if job is None else job.verdict,
            "result": None if job is None else _jsonable(job.result),
            "awaiting_fill": self._pending_refill is not None,
            "bridge_pending": self.bridge.pending_status(),
        }

    def _reservoir_status(self, books_reservoir: dict[str, Any] | None) -> dict[str, Any]:
        """What is really in the reservoir and the catheter, beside what the program says."""
        actual = books_reservoir or self._reservoir
        program = self.engine.state.program
        programmed = program.concentration_ug_per_ml if program else None
        concentration = actual["concentration_ug_per_ml"]
        return {
            "drug": actual["drug"],
            "concentration_ug_per_ml": concentration,
            "programmed_concentration_ug_per_ml": programmed,
            "concentration_mismatch": programmed is not None and programmed != concentration,
            "actual_volume_ml": actual["volume_ml"],
            "catheter_volume_ul": self.catheter.volume_ul,
            "catheter_tip_concentration_ug_per_ml": self.catheter.tip_concentration_ug_per_ml,
        }

    def _clock_status(self) -> dict[str, Any]:
        """Nominal and effective time compression, and what limits the bench."""
        return {
            "time_compression_nominal": self.clock.time_compression_nominal,
            "time_compression_effective": self.clock.factor_at(self.engine.state.updated_at),
            "bench_limit_ul_per_min": self.limits.max_ul_per_min,
            "bench_limited_by": self.limits.limiting,
        }

    def inject_faults(self, request: Any, role: str = "clinician") -> dict[str, Any]:
        """Apply fault settings to the simulated bench: checked as a whole, written to the
        event log, and applied once written."""
        sim = self.bench.sim
        if sim is None:
            raise StateConflict("faults: fault injection needs the simulated bench (--hal sim)")
        changes = request.model_dump(exclude_none=True)
        bubble_ul = changes.pop("air_bubble_ul", None)
        supply = changes.pop("supply_concentration_ug_per_ml", None)
        sensor_changes = {}
        if "sensor_bias_ul_per_min" in changes:
            sensor_changes["bias_ul_per_min"] = changes.pop("sensor_bias_ul_per_min")
        if "sensor_dropout" in changes:
            sensor_changes["dropout"] = changes.pop("sensor_dropout")
        with self.transaction("record the fault injection"):
            bench_faults = sim.bench.check_faults(**changes)
            sensor_faults = dataclasses.replace(sim.flow_sensor.faults, **sensor_changes)
            self.store.add_event(
                "fault", f"faults injected: {request.model_dump(exclude_none=True)}",
                role=role, patient_s=self._patient_s(),
            )  # fmt: skip

            def apply() -> None:
                sim.bench.inject(**changes)
                if sensor_changes:
                    sim.flow_sensor.set_faults(sensor_faults)
                if bubble_ul is not None:
                    sim.bench.inject_air_bubble(bubble_ul)
                if supply is not None:
                    self._supply_concentration_ug_per_ml = supply

            self._after_commit_do(apply)
            return {
                "bench": bench_faults.model_dump(),
                "sensor": dataclasses.asdict(sensor_faults),
                "supply_concentration_ug_per_ml": supply or self._supply_concentration_ug_per_ml,
            }

    def clear_faults(self, role: str = "clinician") -> dict[str, Any]:
        sim = self.bench.sim
        if sim is None:
            raise StateConflict("faults: fault injection needs the simulated bench (--hal sim)")
        with self.transaction("record the faults cleared"):
            self.store.add_event("fault", "faults cleared", role=role, patient_s=self._patient_s())

            def apply() -> None:
                sim.bench.clear_faults()
                sim.flow_sensor.set_faults(type(sim.flow_sensor.faults)())
                self._supply_concentration_ug_per_ml = None

            self._after_commit_do(apply)
            return {
                "bench": type(sim.bench.faults)().model_dump(),
                "sensor": dataclasses.asdict(type(sim.flow_sensor.faults)()),
                "supply_concentration_ug_per_ml": None,
            }

    def _faults(self, bench_faults: dict[str, Any]) -> dict[str, Any]:
        assert self.bench.sim is not None
        return {
            "bench": bench_faults,
            "sensor": dataclasses.asdict(self.bench.sim.flow_sensor.faults),
            "supply_concentration_ug_per_ml": self._supply_concentration_ug_per_ml,
        }

    def bench_readings(self) -> dict[str, Any]:
        """What the bench's own instruments say (balance through its driver; sim physics)."""
        reading: dict[str, Any] = {"kind": self.bench.kind, "steps_issued": 0}
        with self._lock:
            reading["steps_issued"] = self.bench.stepper.steps_issued
            reading["ul_per_step"] = self.ul_per_step
        balance = self.bench.balance
        if balance is not None:
            try:
                weight = balance.read_immediate()
            except BalanceError as error:
                reading["balance_error"] = str(error)
            else:
                reading["balance_mass_g"] = weight.mass_g
                reading["balance_stable"] = weight.stable
        sim = self.bench.sim
        if sim is not None:
            reading["plunger_travel_mm"] = sim.bench.plunger_travel_mm
            reading["syringe_volume_ml"] = sim.bench.syringe_volume_ml
            reading["line_pressure_kpa"] = sim.bench.line_pressure_kpa
            reading["outlet_volume_ul"] = sim.bench.outlet_volume_ul
            reading["faults"] = self._faults(sim.bench.faults.model_dump())
        return reading

    def patient_day_volumes(self) -> list[dict[str, float]]:
        per_day = self.store.delivered_per_patient_day()
        return [{"day": day, "volume_ml": ul / 1000} for day, ul in sorted(per_day.items())]
