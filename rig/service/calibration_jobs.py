"""Calibration runs inside the rig service, and the calibrations in force.

The procedures live in the ``calibration`` package, which the service never imports: it finds
them through the ``itbrig.calibrations`` entry point, a hook with ``describe()``, ``parse(name,
params)`` and ``run(name, params, bench, ...)``. A run takes the bench in real time on its own
thread while therapy is stopped (state ``calibrating``); the delivery loop neither moves the motor
nor watches the flow meanwhile. Cancelling stops the motor at the next wait and opens the valve.

Every run is kept in the books: parameters, raw samples, result, who ran it and the calibration
in force. Applying a result appends a version of that calibration (audited by the API); a rollback
appends a version restoring the one before. The volume calibration sets the bench's µL per step,
the one source that delivery, the flow monitor and every forecast read.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from rig.common.inputs import InputError
from rig.service.loop import REFILL_MOVING, RigService, StateConflict
from rig.service.motion import BenchLimits

log = logging.getLogger(__name__)

HOOK_GROUP = "itbrig.calibrations"
APPLICABLE = {"volume": "volume", "flow-sensor": "flow_sensor"}
"""Procedures whose result can be applied, and the calibration kind each sets."""
MAX_SAMPLES_KEPT = 20_000


class CalibrationCancelled(Exception):
    """The engineer cancelled the run."""


def load_hook() -> Any:
    """The calibration procedures' hook (None when the package is not installed)."""
    for entry_point in entry_points(group=HOOK_GROUP):
        return entry_point.load()
    return None


@dataclass
class CalibrationJob:
    """One run on the service's bench."""

    run_id: int
    procedure: str
    role: str
    params: dict[str, Any] = field(default_factory=dict)
    state: str = "running"
    fraction: float = 0.0
    eta_s: float | None = None
    message: str = "starting"
    samples: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    steps_before: int = 0
    sleep: Callable[[float], None] | None = None
    """How bench time passes (None: real time); a virtual rig runs its loop instead."""
    telemetry: Any = None
    """The service's telemetry snapshot, which shows the run's progress."""

    def wait(self, seconds: float) -> None:
        """Let *seconds* pass; a cancel cuts a real-time wait short and ends the run."""
        if self.sleep is None:
            if self.cancel.wait(seconds):
                raise CalibrationCancelled()
            return
        if self.cancel.is_set():
            raise CalibrationCancelled()
        self.sleep(seconds)

    def on_progress(self, progress: Any) -> None:
        self.fraction, self.eta_s = progress.fraction, progress.eta_s
        self.message = progress.message
        if progress.sample is not None and len(self.samples) < MAX_SAMPLES_KEPT:
            self.samples.append(progress.sample)
        if self.telemetry is not None:
            self.telemetry.calibration = self.status()

    def status(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "procedure": self.procedure,
            "state": self.state,
            "fraction": self.fraction,
            "eta_s": self.eta_s,
            "message": self.message,
            "samples": len(self.samples),
            "latest_sample": self.samples[-1] if self.samples else None,
        }


class CalibrationJobs:
    """The service's calibration runner and the calibrations in force."""

    def __init__(self, service: RigService) -> None:
        self.service = service
        self.job: CalibrationJob | None = None
        self._thread: threading.Thread | None = None
        self._hook: Any = None
        self.sleep: Callable[[float], None] | None = None
        """Set by a virtual rig: runs go through its loop on the virtual clock."""
        self.flow_scale = 1.0
        self.flow_offset_ul_per_min = 0.0
        self._restore()

    # -- the calibrations in force ----------------------------------------------------------

    def _restore(self) -> None:
        """Put the calibrations the books hold in force (at start, before anything reads them)."""
        in_force = self.service.store.calibrations_in_force()
        volume = in_force["volume"]
        value = volume["value"] if volume else None
        nominal = self.service.bench.config.ul_per_microstep
        if value and not math.isclose(value.get("ul_per_step_nominal", nominal), nominal):
            log.warning(
                "volume calibration version %s was made for %.6f µL per step nominal, and this "
                "rig.toml gives %.6f (another syringe or drive): not used; calibrate again",
                volume["version"], value["ul_per_step_nominal"], nominal,
            )  # fmt: skip
            value = None
        self.service.bench.calibrated_ul_per_microstep = value["ul_per_step"] if value else None
        sensor = in_force["flow_sensor"]
        value = sensor["value"] if sensor else None
        self.flow_scale = value["scale"] if value else 1.0
        self.flow_offset_ul_per_min = value["offset_ul_per_min"] if value else 0.0

    def in_force(self) -> dict[str, Any]:
        """What the rig uses now, with the version numbers of the books."""
        books = self.service.store.calibrations_in_force()
        bench = self.service.bench
        volume, sensor = books["volume"], books["flow_sensor"]
        return {
            "ul_per_step": bench.ul_per_microstep,
            "ul_per_step_nominal": bench.config.ul_per_microstep,
            "volume_version": volume["version"] if volume else None,
            "flow_sensor_scale": self.flow_scale,
            "flow_sensor_offset_ul_per_min": self.flow_offset_ul_per_min,
            "flow_sensor_version": sensor["version"] if sensor else None,
        }

    def corrected_flow_ul_per_min(self, raw_ul_per_min: float) -> float:
        """A flow-sensor reading with the flow-sensor calibration in force applied."""
        return self.flow_scale * raw_ul_per_min + self.flow_offset_ul_per_min

    def _put_in_force(self, kind: str, value: dict[str, Any] | None) -> None:
        """Use *value* from now on (lock held, therapy stopped)."""
        service = self.service
        if kind == "flow_sensor":
            self.flow_scale = value["scale"] if value else 1.0
            self.flow_offset_ul_per_min = value["offset_ul_per_min"] if value else 0.0
            service.flow_monitor.restart(service._bench_clock())
            return
        self._use_ul_per_step(value["ul_per_step"] if value else None)

    def _use_ul_per_step(self, ul_per_step: float | None) -> None:
        """The bench's µL per step becomes *ul_per_step* (None: nominal), and with it delivery,
        the flow monitor, the bench limits and the forecasts (therapy stopped, lock held)."""
        service = self.service
        bench = service.bench
        bench.calibrated_ul_per_microstep = ul_per_step
        value = bench.ul_per_microstep
        service.ul_per_step = value
        service.flow_monitor.ul_per_step = value
        motion = service.motion
        motion.ul_per_step = value
        motion.zero_ul = service.engine.state.delivered_ul - bench.stepper.steps_issued * value
        motion.forget()
        service.limits = BenchLimits.from_config(
            bench.config, service.limits.configured_ul_per_min, value
        )
        service.clock.max_bench_ul_per_min = service.limits.max_ul_per_min
        service.flow_monitor.restart(service._bench_clock())

    def _value_of(self, procedure: str, result: dict[str, Any]) -> dict[str, Any]:
        if procedure == "volume":
            value = result.get("ul_per_step_measured")
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise InputError("calibration: the run's result has no positive µL per step")
            nominal = self.service.bench.config.ul_per_microstep
            if not math.isclose(result.get("ul_per_step_nominal", nominal), nominal):
                raise InputError(
                    "run_id: the run was made with another syringe or drive "
                    f"({result['ul_per_step_nominal']:.6f} µL per step nominal, this rig "
                    f"{nominal:.6f}); calibrate again"
                )
            return {
                "ul_per_step": float(value),
                "coefficient": result.get("coefficient"),
                "ul_per_step_nominal": nominal,
            }
        return {
            "scale": float(result["scale"]),
            "offset_ul_per_min": float(result["offset_ul_per_min"]),
        }

    def apply(self, run_id: int, role: str) -> dict[str, Any]:
        """Put a finished run's result in force as a new version of its calibration."""
        service = self.service
        with service.transaction("apply a calibration"):
            self._ready_to_change()
            run = service.store.calibration_run(run_id)
            if run is None:
                raise InputError(f"run_id: no calibration run {run_id}")
            kind = APPLICABLE.get(run["procedure"])
            if kind is None:
                raise InputError(
                    f"run_id: a {run['procedure']} run has nothing to apply; "
                    f"allowed: {', '.join(APPLICABLE)} runs"
                )
            if run["state"] != "done":
                raise InputError(f"run_id: run {run_id} is {run['state']}, not done")
            value = self._value_of(run["procedure"], run["result"])
            service._commit_ledger()  # what was delivered so far, at the µL per step it used
            version = service.store.add_calibration(kind, "apply", value, run_id=run_id, role=role)
            service._after_commit_do(lambda: self._put_in_force(kind, value))
        return {"kind": kind, "version": version, "value": value}

    def rollback(self, kind: str, role: str) -> dict[str, Any]:
        """Put back the version before the one in force (nominal before the first)."""
        service = self.service
        if kind not in APPLICABLE.values():
            raise InputError(f"kind: {kind!r} is not one of {', '.join(APPLICABLE.values())}")
        with service.transaction("roll back a calibration"):
            self._ready_to_change()
            history = service.store.calibration_history(kind)
            if not history:
                raise InputError(f"kind: no {kind} calibration has been applied")
            current = history[-1]
            # The value in force before the current one: what the version it replaced held.
            before = _value_before(history)
            if current["value"] is None and before is None:
                raise InputError(f"kind: the {kind} calibration is already nominal")
            service._commit_ledger()
            version = service.store.add_calibration(
                kind, "rollback", before, run_id=None, role=role
            )
            service._after_commit_do(lambda: self._put_in_force(kind, before))
        return {"kind": kind, "version": version, "value": before}

    def _ready_to_change(self) -> None:
        if self.active:
            raise StateConflict("calibration: a calibration is running; wait or cancel it")
        if self.service.state_name != "stopped":
            raise StateConflict(
                "state: stop delivery before changing a calibration (POST /api/stop)"
            )

    # -- runs --------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.job is not None and self.job.state == "running"

    def hook(self) -> Any:
        if self._hook is None:
            self._hook = load_hook()
            if self._hook is None:
                raise InputError("calibration: the calibration procedures are not installed")
        return self._hook

    def procedures(self) -> list[dict[str, Any]]:
        return self.hook().describe()

    def start(self, procedure: str, params: dict[str, Any], role: str) -> dict[str, Any]:
        """Start *procedure* on the bench; therapy must be stopped."""
        service = self.service
        hook = self.hook()
        checked = hook.parse(procedure, params)
        with service.transaction("start a calibration run"):
            self._ready_to_change()
            refill = service._refill_job
            if refill is not None and refill.phase in REFILL_MOVING:
                raise StateConflict(f"state: the rig is {refill.phase}; wait for it")
            service._commit_ledger()
            run_id = service.store.start_calibration_run(procedure, checked, self.in_force(), role)
            job = CalibrationJob(
                run_id,
                procedure,
                role,
                params=checked,
                sleep=self.sleep,
                telemetry=service.telemetry,
            )

            def start() -> None:
                job.steps_before = service.bench.stepper.steps_issued
                self.job = job
                self._thread = threading.Thread(
                    target=self._run, args=(job, checked), name="calibration", daemon=True
                )
                self._thread.start()

            service._after_commit_do(start)
        return {"run_id": run_id, "procedure": procedure, "state": "running"}

    def cancel(self) -> dict[str, Any]:
        job = self.job
        if job is None or job.state != "running":
            raise StateConflict("calibration: no calibration is running")
        job.cancel.set()
        return job.status()

    def stop(self, timeout_s: float = 5.0) -> None:
        """At service shutdown: cancel a run going on and let it finish its books."""
        job = self.job
        if job is not None and job.state == "running":
            job.cancel.set()
        self.wait_finished(timeout_s)

    def wait_finished(self, timeout_s: float) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def _run(self, job: CalibrationJob, params: dict[str, Any]) -> None:
        service = self.service
        reservoir = service.store.reservoir()
        state, message, result = "failed", "", None
        try:
            result = self.hook().run(
                job.procedure,
                params,
                service.bench,
                now_s=service._bench_clock,
                wait_fn=job.wait,
                ul_per_step=service.ul_per_step,
                syringe_ul=reservoir["volume_ml"] * 1000.0 if reservoir else None,
                time_compression=service.clock.time_compression_nominal,
                progress_fn=job.on_progress,
            )
            state = "done"
        except CalibrationCancelled:
            state, message = "cancelled", "cancelled by the engineer"
        except Exception as error:  # any failure ends the run, never the service
            log.exception("calibration run %d failed", job.run_id)
            message = str(error) or type(error).__name__
        finally:
            service.bench.stepper.stop()
            service.bench.drive.release()
        with service._lock:
            # What the run pumped is not delivery: the plan's count and the ledger skip it.
            steps_now = service.bench.stepper.steps_issued
            pumped_ul = (steps_now - job.steps_before) * service.ul_per_step
            service.motion.zero_ul -= pumped_ul
            service._ledger_steps = steps_now
            service.flow_monitor.restart(service._bench_clock())
            try:
                service.store.finish_calibration_run(
                    job.run_id,
                    state,
                    samples=job.samples,
                    result=result,
                    message=message,
                    pumped_ml=pumped_ul / 1000.0,
                )
            except Exception:
                log.exception("calibration run %d could not be booked", job.run_id)
            else:
                # The syringe is the reservoir: what the run pumped is no longer in it.
                service._reservoir = service.store.reservoir()
                left_ml = max(0.0, service.engine.state.reservoir.volume_ml - pumped_ul / 1000.0)
                service.engine.set_reservoir(left_ml)
                service._forward_engine_events(service.engine.pop_events())
                service._save_engine()
            job.result, job.message, job.state = result, message or job.message, state
            if state == "done":
                job.fraction = 1.0
            service.telemetry.calibration = None


def _value_before(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The value in force before the last version: walk back over rollbacks to an apply."""
    values: list[dict[str, Any] | None] = []
    for row in history:
        if row["action"] == "apply":
            values.append(row["value"])
        elif values:
            values.pop()
    if values:
        values.pop()
    return values[-1] if values else None
