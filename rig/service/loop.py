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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hal.balance import BalanceError
from hal.bench import Bench
from hal.config import HardwareConfig
from hal.flow_sensor import FlowSensorError
from rig.common.inputs import InputError
from rig.service.alarm_manager import AlarmManager
from rig.service.books import RigStore, RunState
from rig.service.config import KioskConfig
from rig.service.flow_monitor import FLOW_CONDITIONS, FlowLimits, FlowMonitor
from rig.service.selftest import SelfTestReport
from rig.therapy.alarms import AlarmCode, alarm_spec
from rig.therapy.clocks import ScaledClock
from rig.therapy.engine import (
    ENGINE_ALARMS,
    EngineEvent,
    GrantedBolus,
    Proposal,
    TherapyEngine,
)
from rig.therapy.plan import bench_steps_per_s
from rig.therapy.programs import Program
from rig.therapy.reservoir import RefillVerdict, refill_verdict
from rig.therapy.units import ul_per_min, volume_ul

log = logging.getLogger("itbrig.service")

LOOP_PERIOD_S = 0.05
SENSOR_PERIOD_S = 0.1
LEDGER_PERIOD_S = 1.0
WATCHDOG_LIMIT_S = 1.0
ENGINE_STATE_KEY = "engine_state"
PATIENT_EPOCH = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
"""Patient time of a fresh install (a Monday morning)."""


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


class StateConflict(InputError):
    """The request is valid but not in the rig's current state (answered 409)."""


@dataclass
class Telemetry:
    """The latest loop snapshot, for the live stream."""

    bench_s: float = 0.0
    patient_time: str = ""
    expected_ul_per_min: float | None = None
    measured_ul_per_min: float | None = None
    sensor_ul_per_min: float | None = None
    commanded_ul_per_min: float = 0.0
    steps: int = 0
    state: str = "stopped"


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
        kiosk: KioskConfig | None = None,
    ) -> None:
        self.bench = bench
        self.kiosk = kiosk or KioskConfig()
        self._bench_clock = bench_clock
        self.store = store
        self._notify = notify or (lambda _message: None)
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self.ul_per_step = bench.ul_per_microstep
        recovered_unclean = not store.was_clean_shutdown()
        saved = store.get_state(ENGINE_STATE_KEY)
        patient_epoch = PATIENT_EPOCH
        if saved is not None:
            patient_epoch = datetime.fromisoformat(saved["updated_at"])
        self.clock = ScaledClock(time_compression, patient_epoch, monotonic=bench_clock)
        if saved is None:
            self.engine = TherapyEngine.new(self.clock)
        else:
            self.engine = TherapyEngine.from_dict(saved, self.clock)
        self.alarms = AlarmManager(
            store, bench.buzzer, bench.led, on_stop_delivery=lambda _code: self._stop_motor()
        )
        self.flow_monitor = FlowMonitor(
            self.ul_per_step, time_compression, flow_limits_for(bench.config)
        )
        self.telemetry = Telemetry()
        self._ledger_steps = bench.stepper.steps_issued
        self._ledger_at = datetime.now(UTC)
        self._ledger_patient_s = self._patient_s()
        self._ledger_due_s = self._bench_clock() + LEDGER_PERIOD_S
        self._sensor_due_s = 0.0
        self._commanded_steps_per_s = 0.0
        self.heartbeat_s = self._bench_clock()
        self._loop: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._pending_refill: RefillVerdict | None = None
        self._virtual_tick_s: float | None = None
        self._booked_boluses: dict[str, int] = {}  # engine bolus start → books' bolus id
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

        The motor stays released until a rate is commanded. A flow sensor that cannot start
        does not stop the service: its reads fail and the flow monitor raises a sensor fault.
        """
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
        while not self._stop_event.is_set():
            started = self._bench_clock()
            self._run_tick(started)
            self._stop_event.wait(max(0.0, LOOP_PERIOD_S - (self.heartbeat_s - started)))

    def _run_tick(self, now_s: float) -> None:
        try:
            self._tick(now_s)
        except Exception:  # the loop must survive anything; the watchdog sees a stall
            log.exception("delivery loop tick failed")
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
            next_tick_s += LOOP_PERIOD_S
        self._virtual_tick_s = next_tick_s
        self.bench.stepper.run_until(until_s, set_clock)

    def _tick(self, now_s: float) -> None:
        with self._lock:
            # Every engine event since the last tick, including those raised while an API call
            # advanced the engine.
            self.engine.advance()
            self._forward_engine_events(self.engine.pop_events())
            self._apply_rate(now_s)
            if now_s >= self._sensor_due_s:
                self._sensor_due_s = now_s + SENSOR_PERIOD_S
                self._check_switches()
                self._read_flow(now_s)
            if now_s >= self._ledger_due_s:
                self._ledger_due_s = now_s + LEDGER_PERIOD_S
                self._commit_ledger()
                self._save_engine()
                self._notify("WATCHDOG=1")
            self.alarms.tick()
            self.alarms.idle_led = ("green", None) if self.is_delivering else ("blue", None)

    @property
    def is_delivering(self) -> bool:
        return self._commanded_steps_per_s > 0

    def _target_steps_per_s(self) -> float:
        plan = self.engine.plan
        rate_ul_per_h = plan.rate_ul_per_h(self.engine.state.updated_at)
        if self.engine.state.halted or rate_ul_per_h <= 0:
            return 0.0
        return bench_steps_per_s(rate_ul_per_h, self.ul_per_step, self.clock.time_compression)

    def _apply_rate(self, now_s: float) -> None:
        target = self._target_steps_per_s()
        if target != self._commanded_steps_per_s:
            max_rate = self.bench.config.drive.max_rate_steps_per_s
            if target > max_rate:
                log.warning("step rate %.0f/s above the drive maximum; capped", target)
                target = max_rate
            self._command_rate(target, now_s)

    def _command_rate(self, steps_per_s: float, now_s: float) -> None:
        """Drive the stepper at *steps_per_s* (0 stops and disables it); tell the flow monitor."""
        if steps_per_s > 0:
            self.bench.drive.energise()
            self.bench.stepper.set_rate(steps_per_s)
        else:
            self.bench.stepper.stop()
            self.bench.drive.release()  # a stopped pump holds no current: nothing can drive it
        self._commanded_steps_per_s = steps_per_s
        self.flow_monitor.set_rate(ul_per_min(steps_per_s, self.ul_per_step), now_s)

    def _read_flow(self, now_s: float) -> None:
        steps = self.bench.stepper.steps_issued
        try:
            reading = self.bench.flow_sensor.read()
        except FlowSensorError as error:
            status = self.flow_monitor.observe_error(now_s, str(error))
            self.telemetry.sensor_ul_per_min = None
        else:
            status = self.flow_monitor.observe(
                now_s, steps, reading.flow_ul_per_min, reading.air_in_line
            )
            self.telemetry.sensor_ul_per_min = reading.flow_ul_per_min
        for code in FLOW_CONDITIONS:
            present = code.value in status.conditions
            message = self._flow_message(code, status) if present else ""
            self._set_condition(code, present, message)
        self._sync_engine_alarms()
        telemetry = self.telemetry
        telemetry.bench_s = now_s
        telemetry.patient_time = self.engine.state.updated_at.isoformat()
        telemetry.expected_ul_per_min = status.expected_ul_per_min
        telemetry.measured_ul_per_min = status.measured_ul_per_min
        telemetry.commanded_ul_per_min = ul_per_min(self._commanded_steps_per_s, self.ul_per_step)
        telemetry.steps = steps
        telemetry.state = self.state_name

    @staticmethod
    def _flow_message(code: str, status: Any) -> str:
        expected = status.expected_ul_per_min
        measured = status.measured_ul_per_min
        if expected is None or measured is None:
            return alarm_spec(code).meaning
        return (
            f"measured {measured:.1f} µL/min against {expected:.1f} µL/min expected "
            f"over {status.window_bench_s:.1f} bench s"
        )

    def _check_switches(self) -> None:
        estop_pressed = self.bench.estop.is_pressed
        at_end = self.bench.limits.at_empty
        self._set_condition(AlarmCode.EMERGENCY_STOP, estop_pressed, "emergency stop pressed")
        self._set_condition(AlarmCode.PLUNGER_AT_END, at_end, "bench syringe is empty")

    def _set_condition(self, code: AlarmCode, present: bool, message: str = "") -> None:
        """A service alarm condition now: raise it (alarm manager and engine) or let it go."""
        if present:
            if self.alarms.raise_condition(code, message, patient_s=self._patient_s()):
                self.engine.raise_alarm(code, message)
        elif self.alarms.condition_present(code):
            self.alarms.condition_gone(code, patient_s=self._patient_s())

    def _forward_engine_events(self, events: list[EngineEvent]) -> None:
        for event in events:
            if event.code is None:
                continue
            if event.kind == "alarm_raised" and event.code in ENGINE_ALARMS | {"dose_limit"}:
                self.alarms.raise_condition(
                    event.code, event.detail or alarm_spec(event.code).meaning
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
        self._command_rate(0.0, self._bench_clock())

    # -- books ------------------------------------------------------------------------------------

    def _patient_s(self) -> float:
        return self._patient_s_at(self.clock.now())

    @staticmethod
    def _patient_s_at(moment: datetime) -> float:
        return (moment - PATIENT_EPOCH).total_seconds()

    def _commit_ledger(self) -> None:
        steps_now = self.bench.stepper.steps_issued
        steps = max(0, steps_now - self._ledger_steps)
        patient_end_s = max(self._patient_s(), self._ledger_patient_s)
        volume_ul = steps * self.ul_per_step
        bolus_id, bolus_ul = self._bolus_share(self._ledger_patient_s, patient_end_s, volume_ul)
        self.store.record_delivery(
            start_at=self._ledger_at,
            patient_start_s=self._ledger_patient_s,
            patient_end_s=patient_end_s,
            steps=steps,
            basal_ul=volume_ul - bolus_ul,
            bolus_ul=bolus_ul,
            bolus_id=bolus_id,
        )
        self._ledger_steps = steps_now
        self._ledger_at = datetime.now(UTC)
        self._ledger_patient_s = patient_end_s
        self._close_patient_boluses()

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
    ) -> tuple[int | None, float]:
        """(bolus id, µL of *volume_ul* that the running patient bolus delivered in the span)."""
        running = self._running_patient_bolus()
        if running is None:
            return None, 0.0
        bolus_id, granted = running
        start_s = self._patient_s_at(granted.start)
        end = (
            granted.end if granted.cancelled_at is None else min(granted.end, granted.cancelled_at)
        )
        overlap_s = min(patient_end_s, self._patient_s_at(end)) - max(patient_start_s, start_s)
        if overlap_s <= 0:
            return bolus_id, 0.0
        bolus_ul_per_s = self._patient_bolus_volume_ul(granted) / (granted.duration_min * 60)
        return bolus_id, min(volume_ul, overlap_s * bolus_ul_per_s)

    def _patient_bolus_volume_ul(self, granted: GrantedBolus) -> float:
        program = self.engine.state.program
        concentration = program.concentration_ug_per_ml if program else 0.0
        return volume_ul(granted.dose_ug, concentration) if concentration else 0.0

    def _book_patient_bolus(self, role: str) -> int:
        """A granted patient bolus goes on the books as active at once."""
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

    def _close_patient_boluses(self) -> None:
        """Books' active patient boluses that the engine has ended or cancelled: done/cancelled."""
        now = self.engine.state.updated_at
        for granted in self.engine.state.patient_boluses:
            key = granted.start.isoformat()
            bolus_id = self._booked_boluses.get(key)
            if bolus_id is None:
                continue
            if granted.cancelled_at is not None:
                self.store.cancel_bolus(
                    bolus_id, patient_s=self._patient_s(), reason="delivery stopped"
                )
            elif granted.end <= now:
                self.store.finish_bolus(bolus_id, patient_s=self._patient_s())
            else:
                continue
            del self._booked_boluses[key]

    def _save_engine(self) -> None:
        self.store.set_state({ENGINE_STATE_KEY: self.engine.to_dict()})

    def _changed(self) -> None:
        """After any state change: commit the books at once."""
        self._commit_ledger()
        self._save_engine()
        self._apply_rate(self._bench_clock())

    # -- watchdog -------------------------------------------------------------------------------

    def _watch(self) -> None:
        tripped = False
        while not self._stop_event.wait(0.2):
            stalled_s = self._bench_clock() - self.heartbeat_s
            if stalled_s > WATCHDOG_LIMIT_S and not tripped:
                tripped = True
                self.bench.drive.release()  # first: the motor can no longer move
                self.bench.stepper.stop()
                log.error("delivery loop stalled for %.1f s: stepper disabled", stalled_s)
                with self._lock:
                    message = f"delivery loop stalled for {stalled_s:.1f} s"
                    self._set_condition(AlarmCode.WATCHDOG, True, message)
            elif stalled_s <= WATCHDOG_LIMIT_S and tripped:
                tripped = False
                with self._lock:
                    self._set_condition(AlarmCode.WATCHDOG, False)

    # -- commands (called by the API) -------------------------------------------------------

    @property
    def state_name(self) -> str:
        if AlarmCode.POWER_LOSS_RECOVERY in self.alarms.active_codes:
            return "recovery"
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
            return self.engine.propose(program)

    def confirm(self, proposal_id: str, accept_warnings: bool, role: str) -> None:
        with self._lock:
            self.engine.confirm(proposal_id, accept_warnings)
            program = self.engine.state.program
            assert program is not None
            self.store.add_program(
                program.model_dump(mode="json"),
                role=role,
                summary=f"{program.mode} {program.max_daily_total_ug():g} ug/day",
                patient_s=self._patient_s(),
            )
            self._changed()

    def start_delivery(self, role: str) -> None:
        with self._lock:
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
            self.engine.resume()
            self.store.set_run_state(RunState.RUNNING, role=role, patient_s=self._patient_s())
            self._changed()

    def stop_delivery(self, role: str) -> None:
        with self._lock:
            self._halt()
            self.store.set_run_state(RunState.STOPPED, role=role, patient_s=self._patient_s())
            self._changed()

    def resume_after_recovery(self, role: str) -> None:
        with self._lock:
            if AlarmCode.POWER_LOSS_RECOVERY not in self.alarms.active_codes:
                raise StateConflict("state: no power-loss recovery is pending")
            self.alarms.condition_gone(AlarmCode.POWER_LOSS_RECOVERY)
            self.alarms.acknowledge(role=role)
            self._sync_engine_alarms()
            self.engine.resume()
            self._changed()

    def request_patient_bolus(self, role: str = "trainee") -> dict[str, Any]:
        with self._lock:
            if self.alarms.blocks_bolus():
                active = ", ".join(self.alarms.active_codes)
                return {"granted": False, "reason": "alarm_active",
                        "message": f"refused: alarm active ({active})"}  # fmt: skip
            self._commit_ledger()  # what came before the bolus is basal
            decision = self.engine.request_patient_bolus()
            self._forward_engine_events(self.engine.pop_events())
            answer = decision.model_dump(mode="json")
            if decision.granted:
                answer["bolus_id"] = self._book_patient_bolus(role)
            self._changed()
            return answer

    def acknowledge(self, alarm_id: int | None, role: str) -> list[int]:
        with self._lock:
            ids = self.alarms.acknowledge(alarm_id, role=role, patient_s=self._patient_s())
            self._sync_engine_alarms()
            return ids

    def silence(self, duration_s: float, role: str) -> float:
        with self._lock:
            return self.alarms.silence(duration_s, role=role, patient_s=self._patient_s())

    def refill_withdrawn(self, withdrawn_ml: float) -> RefillVerdict:
        with self._lock:
            reservoir = self.engine.state.reservoir
            verdict = refill_verdict(reservoir.volume_ml, withdrawn_ml, reservoir.capacity_ml)
            self._pending_refill = verdict
            if verdict.significant:
                self.alarms.raise_condition(
                    AlarmCode.REFILL_DISCREPANCY, verdict.explanation, patient_s=self._patient_s()
                )
                self.alarms.condition_gone(AlarmCode.REFILL_DISCREPANCY)
            return verdict

    def refill_fill(
        self, volume_ml: float, concentration_ug_per_ml: float, role: str
    ) -> dict[str, Any]:
        with self._lock:
            if self._pending_refill is None:
                raise StateConflict(
                    "state: enter the withdrawn volume first (POST /api/refill/withdrawn)"
                )
            program = self.engine.state.program
            old_concentration = program.concentration_ug_per_ml if program else None
            status = self.engine.set_reservoir(volume_ml)
            self.store.fill_reservoir(
                drug=program.drug if program else "baclofen",
                concentration_ug_per_ml=concentration_ug_per_ml,
                volume_ml=volume_ml,
                capacity_ml=status.reservoir.capacity_ml,
                low_threshold_ml=status.reservoir.low_threshold_ml,
                role=role,
                patient_s=self._patient_s(),
            )
            self._forward_engine_events(self.engine.pop_events())
            self._pending_refill = None
            self._changed()
            forecast = self.engine.status().settings.reservoir
            return {
                "volume_ml": volume_ml,
                "concentration_ug_per_ml": concentration_ug_per_ml,
                "concentration_changed": old_concentration is not None
                and old_concentration != concentration_ug_per_ml,
                "bridge_bolus_offered": old_concentration is not None
                and old_concentration != concentration_ug_per_ml,
                "old_concentration_ug_per_ml": old_concentration,
                "low_alarm_at": forecast.low_alarm_at,
                "empty_at": forecast.empty_at,
            }

    def set_time_compression(self, factor: float) -> None:
        with self._lock:
            self.engine.advance()
            now = self.engine.state.updated_at
            self.clock = ScaledClock(factor, now, monotonic=self._bench_clock)
            self.engine.clock = self.clock
            self.flow_monitor.set_time_compression(factor, self._bench_clock())
            self._changed()

    def status(self) -> dict[str, Any]:
        with self._lock:
            therapy = self.engine.status()
            steps, volume_ul = self.store.delivered_totals()
            rate_ul_per_h = therapy.rate_ul_per_h_now if not therapy.halted else 0.0
            active = {row["code"]: row for row in self.store.active_alarms()}
            return {
                "training_notice": "Training device — not for clinical use",
                "state": self.state_name,
                "hal": self.bench.kind,
                "self_test_passed": None if self.self_test is None else self.self_test.passed,
                "kiosk": self.kiosk.model_dump(),
                "time_compression": self.clock.time_compression,
                "patient_time": therapy.now,
                "therapy": therapy.model_dump(mode="json"),
                "rates": {
                    "dose_ug_per_day": therapy.settings.daily_dose_ug_per_day,
                    "rate_ul_per_h": rate_ul_per_h,
                    "rate_ml_per_day": rate_ul_per_h * 24 / 1000,
                    "bench_ul_per_min": ul_per_min(self._commanded_steps_per_s, self.ul_per_step),
                    "bench_steps_per_s": self._commanded_steps_per_s,
                },
                "alarms": [
                    {
                        "id": row["id"],
                        "code": code,
                        "priority": row["priority"],
                        "title": alarm_spec(code).title,
                        "message": row["message"],
                        "action": alarm_spec(code).action,
                        "raised_at": row["raised_at_utc"],
                        "acknowledged": row["acknowledged_at_utc"] is not None,
                        "condition_present": self.alarms.condition_present(code),
                    }
                    for code, row in active.items()
                ],
                "silence_remaining_s": self.alarms.silence_remaining_s(),
                "delivered": {
                    "steps": steps,
                    "volume_ml": volume_ul / 1000,
                    "books_volume_ml": therapy.delivered_ul / 1000,
                    "books_dose_ug": therapy.delivered_ug,
                },
                "flow": {
                    "expected_ul_per_min": self.telemetry.expected_ul_per_min,
                    "measured_ul_per_min": self.telemetry.measured_ul_per_min,
                    "sensor_ul_per_min": self.telemetry.sensor_ul_per_min,
                },
            }

    def inject_faults(self, request: Any) -> dict[str, Any]:
        """Apply fault settings to the simulated bench (validated as a whole first)."""
        sim = self.bench.sim
        if sim is None:
            raise StateConflict("faults: fault injection needs the simulated bench (--hal sim)")
        changes = request.model_dump(exclude_none=True)
        bubble_ul = changes.pop("air_bubble_ul", None)
        sensor_changes = {}
        if "sensor_bias_ul_per_min" in changes:
            sensor_changes["bias_ul_per_min"] = changes.pop("sensor_bias_ul_per_min")
        if "sensor_dropout" in changes:
            sensor_changes["dropout"] = changes.pop("sensor_dropout")
        with self._lock:
            bench_faults = sim.bench.inject(**changes)
            if sensor_changes:
                sim.flow_sensor.set_faults(
                    dataclasses.replace(sim.flow_sensor.faults, **sensor_changes)
                )
            if bubble_ul is not None:
                sim.bench.inject_air_bubble(bubble_ul)
            self.store.add_event(
                "fault", f"faults injected: {request.model_dump(exclude_none=True)}",
                patient_s=self._patient_s(),
            )  # fmt: skip
            return self._faults(bench_faults.model_dump())

    def clear_faults(self) -> dict[str, Any]:
        sim = self.bench.sim
        if sim is None:
            raise StateConflict("faults: fault injection needs the simulated bench (--hal sim)")
        with self._lock:
            sim.bench.clear_faults()
            sim.flow_sensor.set_faults(type(sim.flow_sensor.faults)())
            self.store.add_event("fault", "faults cleared", patient_s=self._patient_s())
            return self._faults(sim.bench.faults.model_dump())

    def _faults(self, bench_faults: dict[str, Any]) -> dict[str, Any]:
        assert self.bench.sim is not None
        return {
            "bench": bench_faults,
            "sensor": dataclasses.asdict(self.bench.sim.flow_sensor.faults),
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
