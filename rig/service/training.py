"""The scenario runner: a patient fed by what really reaches it, the scenario's timeline of
clinical faults, the trainee's actions read from the books, and the score and debrief.

A :class:`ScenarioRun` drives a :class:`RigService`: it sets the pump up, then each
:meth:`~ScenarioRun.tick` feeds the patient model the µg that left the catheter tip since the last
tick (``catheter.patient_ug``, as changed by the catheter faults), fires the events whose time or
trigger has come, and reads the event log for what the trainee did on the rig. The trainee's other
actions (assessing the patient, a lumbar test dose, a responder decision) are recorded with
:meth:`~ScenarioRun.act`. :func:`run_fast` runs a scenario in-process on a virtual clock
(:class:`~rig.service.virtual.VirtualRig`); :class:`TrainingDesk` runs one inside the service.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rig.common.inputs import InputError, StrictModel
from rig.service.books.schema import MAX_QUERY_ROWS
from rig.service.loop import PATIENT_EPOCH, RigService, StateConflict
from rig.therapy.alarms import AlarmCode
from rig.therapy.clinical_faults import CLINICAL_ACTIONS, ClinicalFault, fault_params
from rig.therapy.drugs import parse_program
from rig.therapy.patient import PatientModel, PatientSnapshot
from rig.therapy.scenario import Action, Scenario, ScriptedAction, score_run
from rig.therapy.units import hours

log = logging.getLogger("itbrig.service")
SCENARIO_ROLE = "scenario"
TRAINEE_ROLE = "clinician"
MAX_TICK_H = 0.25
"""Longest patient interval fed to the patient at once; snapshots are kept at least hourly."""
DESK_PERIOD_S = 0.25
FAST_TIME_COMPRESSION = 5760.0
"""×5760 (four patient days per bench minute): fewer loop ticks per patient hour; the bench
slows the patient clock itself wherever its flow limit needs it."""
TRAINING_EVENT_KIND = "training"


def _all_events(service: RigService, kind: str | None = None) -> list[dict[str, Any]]:
    """Every event of the books (of one *kind*), oldest first, page by page."""
    events: list[dict[str, Any]] = []
    while page := service.store.events(
        since_id=events[-1]["id"] if events else None, kind=kind, limit=MAX_QUERY_ROWS
    ):
        events += page
    return events


class _BenchFaultChange(StrictModel):
    """The bench faults a clinical fault sets (``RigService.inject_faults`` takes it)."""

    motor_stalled: bool | None = None
    occlusion_fraction: float | None = None
    supply_concentration_ug_per_ml: float | None = None


class ScenarioRun:
    """One scenario on one rig service, from set-up to the report."""

    def __init__(
        self,
        service: RigService,
        scenario: Scenario,
        *,
        mode: str = "assessment",
        trainee: str | None = None,
    ) -> None:
        if mode not in ("guided", "assessment"):
            raise InputError(f"mode: {mode!r} is not a mode; allowed guided, assessment")
        self.service = service
        self.scenario = scenario
        self.mode = mode
        self.trainee = trainee
        self._lock = threading.RLock()
        self._set_up_pump()
        self.started_at: datetime = service.clock.now()
        daily_ug = service.engine.status().settings.daily_dose_ug_per_day
        self.patient = PatientModel(scenario.patient.adapted_to(daily_ug))
        self.timeline: list[PatientSnapshot] = [self.patient.snapshot()]
        self.actions: list[Action] = []
        self.messages: list[dict[str, Any]] = []
        self.fired: dict[str, float] = {}
        self.finished = False
        self.stopped_early = False
        self.report: dict[str, Any] | None = None
        self._patient_ug_seen = service.catheter.patient_ug
        self._event_id = max((e["id"] for e in _all_events(service)), default=0)
        self._programs: dict[int, dict[str, Any]] = {}
        self._blocked_fraction = 0.0
        self._disconnected = False
        self._over_factor = 1.0
        self._stall: tuple[float, float, float] | None = None  # start_h, period_h, stalled_h
        self._stalled = False
        self._stall_until_h: float | None = None
        self._next_sample_h = 1.0
        self._note(0.0, f"{scenario.title}. {' '.join(scenario.summary.split())}".strip())

    # -- set-up ---------------------------------------------------------------------------------

    def _set_up_pump(self) -> None:
        """The scenario's reservoir, program and run state, done as the scenario (not scored)."""
        service, pump = self.service, self.scenario.pump
        program = parse_program(self.scenario.program, f"{self.scenario.name}: program")
        service.stop_delivery(SCENARIO_ROLE)
        if service.alarms.active_codes:
            service.acknowledge(None, SCENARIO_ROLE)
        concentration = pump.concentration_ug_per_ml or program.concentration_ug_per_ml
        reservoir = service.engine.state.reservoir
        service.refill_withdrawn(reservoir.volume_ml, SCENARIO_ROLE)
        service.refill_fill(pump.reservoir_ml, concentration, SCENARIO_ROLE)
        proposal = service.propose(program)
        service.confirm(proposal.proposal_id, True, SCENARIO_ROLE)
        if pump.running:
            service.start_delivery(SCENARIO_ROLE)

    # -- time -----------------------------------------------------------------------------------

    def now_h(self) -> float:
        return hours(self.service.clock.now() - self.started_at)

    def tick(self) -> None:
        """Feed the patient, read the trainee's actions, fire what is due; end at the duration.

        Under the service's lock first, as every request and the delivery loop take it: the
        books and the catheter are read, and faults applied, between their changes."""
        with self.service.lock, self._lock:
            if self.finished:
                return
            at_h = min(self.now_h(), self.scenario.duration_h)
            self._feed_patient(at_h)
            self._read_books(at_h)
            self._follow_stall(at_h)
            self._fire_events(at_h)
            if at_h >= self._next_sample_h or at_h >= self.scenario.duration_h:
                self.timeline.append(self.patient.snapshot())
                self._next_sample_h = math.floor(at_h) + 1.0
            if at_h >= self.scenario.duration_h:
                self.finish()

    def _feed_patient(self, at_h: float) -> None:
        patient_ug = self.service.catheter.patient_ug
        reached_ug = max(0.0, patient_ug - self._patient_ug_seen)
        self._patient_ug_seen = patient_ug
        if self._over_factor > 1.0 and reached_ug > 0:
            extra_ug = reached_ug * (self._over_factor - 1.0)
            reached_ug += extra_ug
            self._drain_syringe(extra_ug / self._reservoir_concentration())
        if self._disconnected:
            self.patient.add_depot(reached_ug)
            reached_ug = 0.0
        reached_ug *= 1.0 - self._blocked_fraction
        self.patient.advance(at_h - self.patient.at_h, reached_ug)

    def _reservoir_concentration(self) -> float:
        reservoir = self.service.store.reservoir() or {}
        return float(reservoir.get("concentration_ug_per_ml") or 500.0)

    def _drain_syringe(self, volume_ml: float) -> None:
        """Take *volume_ml* out of the simulated syringe (drug that left without a step)."""
        sim = self.service.bench.sim
        if sim is not None and volume_ml > 0:
            sim.bench.fill(max(0.0, sim.bench.syringe_volume_ml - volume_ml))

    # -- the trainee's actions ------------------------------------------------------------------

    def _read_books(self, at_h: float) -> None:
        for event in self.service.store.events(since_id=self._event_id, limit=1000):
            self._event_id = event["id"]
            role = event.get("role")
            if role is None or role == SCENARIO_ROLE:
                continue
            action = self._action_of(event)
            if action is not None:
                event_h = event.get("patient_s")
                moment_h = at_h
                if isinstance(event_h, int | float):
                    moment_h = min(at_h, hours(self._patient_at(event_h) - self.started_at))
                self.actions.append(Action(at_h=round(max(0.0, moment_h), 4), **action))

    @staticmethod
    def _patient_at(patient_s: float) -> datetime:
        return PATIENT_EPOCH + timedelta(seconds=patient_s)

    def _action_of(self, event: dict[str, Any]) -> dict[str, Any] | None:
        kind, message, detail = event["kind"], event["message"], event.get("detail") or {}
        if kind == "program":
            program = self._program(detail.get("program_id"))
            return {
                "action": "program_confirmed",
                "params": {
                    "mode": program.get("mode"),
                    "dose_ug_per_day": program.get("dose_ug_per_day"),
                    "concentration_ug_per_ml": program.get("concentration_ug_per_ml"),
                },
            }
        if kind == "run" and "RUNNING" in message:
            return {"action": "start"}
        if kind == "run" and "STOPPED" in message:
            return {"action": "stop"}
        if kind == "reservoir" and "withdrawn_ml" in detail:
            keys = ("withdrawn_ml", "significant", "difference_ml", "causes")
            return {"action": "refill_withdrawn", "params": {k: detail.get(k) for k in keys}}
        if kind == "reservoir" and message.startswith("reservoir filled"):
            return {
                "action": "refill_fill",
                "params": {
                    "volume_ml": detail.get("volume_ml"),
                    "concentration_ug_per_ml": detail.get("concentration_ug_per_ml"),
                },
            }
        if kind == "alarm" and "acknowledged" in message:
            return {"action": "alarms_acknowledged"}
        return None

    def _program(self, program_id: Any) -> dict[str, Any]:
        if program_id not in self._programs:
            for row in self.service.store.program_history():
                self._programs[row["id"]] = row.get("program") or {}
        return self._programs.get(program_id, {})

    def act(self, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A clinical action of the trainee (not one of the rig's); its effect on the patient."""
        params = dict(params or {})
        if action not in CLINICAL_ACTIONS:
            raise InputError(
                f"action: {action!r} is not a clinical action; allowed "
                + ", ".join(sorted(CLINICAL_ACTIONS))
            )
        with self._lock:
            if self.finished:
                raise StateConflict("training: the scenario has ended")
            if action == "lumbar_bolus":
                dose_ug = params.get("dose_ug")
                if not isinstance(dose_ug, int | float) or not 0 < dose_ug <= 200:
                    raise InputError("params.dose_ug: give the test dose, 1 to 200 µg")
                self.tick()
                self.patient.bolus(float(dose_ug))
            if action == "responder_decision" and params.get("value") not in (
                "responder",
                "non_responder",
            ):
                raise InputError("params.value: allowed responder, non_responder")
            at_h = round(min(self.now_h(), self.scenario.duration_h), 4)
            self.actions.append(Action(at_h=at_h, action=action, params=params))
            self.service.store.add_event(
                TRAINING_EVENT_KIND,
                f"training action: {action} {params or ''}".strip(),
                role=SCENARIO_ROLE,
                detail={"action": action, "params": params},
            )
            return {"at_h": at_h, "action": action, "params": params}

    def inject(self, fault: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A clinical fault set by the trainer now (beside the scenario's own timeline)."""
        try:
            code = ClinicalFault(fault)
        except ValueError:
            raise InputError(
                f"fault: {fault!r} is not a clinical fault; allowed "
                + ", ".join(f.value for f in ClinicalFault)
            ) from None
        with self.service.lock, self._lock:
            if self.finished:
                raise StateConflict("training: the scenario has ended")
            at_h = min(self.now_h(), self.scenario.duration_h)
            try:
                fault_params(code, dict(params or {}))
            except ValueError as error:
                raise InputError(f"params: {error}") from None
            self._apply_fault(at_h, code, dict(params or {}))
            return next(a for a in reversed(self.actions) if a.action == code.value).model_dump(
                mode="json"
            )

    # -- events and faults ----------------------------------------------------------------------

    def _fire_events(self, at_h: float) -> None:
        snapshot = self.patient.snapshot()
        trainee_actions = {a.action for a in self.actions if a.source == "trainee"}
        for event in self.scenario.events:
            if event.id in self.fired:
                continue
            due = False
            if event.at_h is not None:
                due = at_h >= event.at_h
            elif event.when == "refill_filled":
                due = "refill_fill" in trainee_actions
            elif event.when == "refill_withdrawn":
                due = "refill_withdrawn" in trainee_actions
            elif event.when == "action":
                due = event.value in trainee_actions
            elif event.when == "alarm":
                due = event.value in self.service.alarms.active_codes
            elif event.when == "sign":
                due = event.value in snapshot.signs
            elif event.when == "effect_above":
                due = snapshot.effect > float(event.value)  # type: ignore[arg-type]
            elif event.when == "effect_below":
                due = snapshot.effect < float(event.value)  # type: ignore[arg-type]
            if due:
                self.fired[event.id] = round(at_h, 4)
                if event.fault is not None:
                    self._apply_fault(at_h, event.fault, event.params)
                hint = event.hint if self.mode == "guided" else ""
                if event.message or hint:
                    self._note(at_h, event.message, hint)

    def _note(self, at_h: float, message: str, hint: str = "") -> None:
        self.messages.append({"at_h": round(at_h, 4), "message": message, "hint": hint})

    def _apply_fault(self, at_h: float, fault: ClinicalFault, params: dict[str, Any]) -> None:
        service = self.service
        detail: dict[str, Any] = dict(params)
        params = fault_params(fault, params)
        index = len(self.actions)  # the fault first, then what it set off
        if fault == ClinicalFault.WRONG_CONCENTRATION:
            change = _BenchFaultChange(
                supply_concentration_ug_per_ml=params["concentration_ug_per_ml"]
            )
            service.inject_faults(change, SCENARIO_ROLE)
        elif fault == ClinicalFault.POCKET_FILL:
            sim = service.bench.sim
            fraction = params["fraction"]
            if sim is not None:
                in_syringe_ml = sim.bench.syringe_volume_ml
                lost_ml = in_syringe_ml * fraction
                sim.bench.fill(in_syringe_ml - lost_ml)
                depot_ug = lost_ml * self._reservoir_concentration()
                self.patient.add_depot(depot_ug)
                detail |= {"under_skin_ml": round(lost_ml, 4), "depot_ug": round(depot_ug, 1)}
        elif fault == ClinicalFault.ACCESS_PORT_INJECTION:
            injected_ug = params["volume_ml"] * params["concentration_ug_per_ml"]
            catheter_ug = sum(
                parcel.volume_ul * parcel.concentration_ug_per_ml / 1000.0
                for parcel in service.catheter.parcels
            )
            self.patient.bolus(injected_ug + catheter_ug)
            detail["bolus_ug"] = round(injected_ug + catheter_ug, 1)
        elif fault == ClinicalFault.CATHETER_OCCLUSION:
            self._blocked_fraction = params["fraction"]
            if params.get("bench"):
                change = _BenchFaultChange(occlusion_fraction=self._blocked_fraction)
                service.inject_faults(change, SCENARIO_ROLE)
        elif fault == ClinicalFault.CATHETER_DISCONNECTION:
            self._disconnected = True
        elif fault == ClinicalFault.OVER_INFUSION:
            self._over_factor = params["factor"]
        elif fault == ClinicalFault.INTERMITTENT_STALL:
            self._stall = (at_h, params["period_h"], params["stalled_h"])
        elif fault == ClinicalFault.MRI_STALL:
            self._stall_until_h = at_h + params["recovery_h"]
            self._set_stalled(at_h, True)
        elif fault == ClinicalFault.LOW_BATTERY_RESET:
            dose = params["dose_ug_per_day"]
            self._reprogram(lambda program: {**program, "dose_ug_per_day": dose})
            service.alarms.raise_condition(
                AlarmCode.ERI,
                f"low-battery reset: the rate was reset to {dose:g} µg/day",
                patient_s=None,
            )
        elif fault == ClinicalFault.UG_PER_HOUR_ERROR:
            try:
                self._reprogram(
                    lambda program: {**program, "dose_ug_per_day": program["dose_ug_per_day"] * 24}
                )
            except InputError as error:  # the drug library's hard limit stops it
                detail["refused"] = str(error)
        elif fault == ClinicalFault.UNFINISHED_PROGRAMMING:
            service.stop_delivery(SCENARIO_ROLE)
        self.actions.insert(
            index, Action(at_h=round(at_h, 4), action=fault.value, params=detail, source="fault")
        )

    def _reprogram(self, change: Any) -> None:
        """Confirm a changed copy of the program in force, as the pump (not the trainee)."""
        program = self.service.engine.state.program
        if program is None:
            return
        changed = parse_program(change(program.model_dump(mode="json")), "scenario fault")
        proposal = self.service.propose(changed)
        self.service.confirm(proposal.proposal_id, True, SCENARIO_ROLE)

    def _follow_stall(self, at_h: float) -> None:
        if self._stall_until_h is not None and at_h >= self._stall_until_h:
            self._stall_until_h = None
            self._set_stalled(at_h, False)
        if self._stall is None:
            return
        start_h, period_h, stalled_h = self._stall
        stalled = (at_h - start_h) % period_h < stalled_h
        if stalled != self._stalled:
            self._set_stalled(at_h, stalled)

    def _set_stalled(self, at_h: float, stalled: bool) -> None:
        self._stalled = stalled
        self.service.inject_faults(_BenchFaultChange(motor_stalled=stalled), SCENARIO_ROLE)
        self.actions.append(
            Action(
                at_h=round(at_h, 4),
                action="motor_stall" if stalled else "stall_recovery",
                source="fault",
            )
        )

    def _actions_in_order(self) -> list[Action]:
        """Every action by its patient time (the rig's are read from the books a tick later)."""
        return sorted(self.actions, key=lambda action: action.at_h)

    # -- the end --------------------------------------------------------------------------------

    def finish(self, *, stopped: bool = False) -> dict[str, Any]:
        """Score, clear the faults this run set, and keep the report in the books."""
        with self._lock:
            if self.report is not None:
                return self.report
            self.finished = True
            self.stopped_early = stopped
            ended_h = round(min(self.now_h(), self.scenario.duration_h), 4)
            if self.timeline[-1].at_h < self.patient.at_h:
                self.timeline.append(self.patient.snapshot())
            score = score_run(self.scenario, self.actions, self.fired, ended_h)
            if self.service.bench.sim is not None:
                self.service.clear_faults(SCENARIO_ROLE)
            self.report = {
                "scenario": self.scenario.name,
                "title": self.scenario.title,
                "mode": self.mode,
                "trainee": self.trainee,
                "started_at": self.started_at.isoformat(),
                "ended_h": ended_h,
                "stopped_early": stopped,
                **score.model_dump(mode="json"),
                "actions": [a.model_dump(mode="json") for a in self._actions_in_order()],
                "events_fired": self.fired,
                "messages": self.messages,
                "timeline": [s.model_dump(mode="json") for s in self.timeline],
                "debrief": self.scenario.debrief.notes,
            }
            self.service.store.add_event(
                TRAINING_EVENT_KIND,
                f"scenario {self.scenario.name} ended"
                + (f" for {self.trainee}" if self.trainee else "")
                + f": score {score.points}/{score.max_points}, "
                + ("mastery" if score.mastery else "no mastery"),
                role=SCENARIO_ROLE,
                detail=self.report,
            )
            return self.report

    def status(self, trainer: bool = False) -> dict[str, Any]:
        """What the panels show; hints and the patient's timeline only in guided mode or for
        the trainer."""
        with self._lock:
            snapshot = self.patient.snapshot()
            status: dict[str, Any] = {
                "scenario": self.scenario.name,
                "title": self.scenario.title,
                "mode": self.mode,
                "trainee": self.trainee,
                "at_h": round(min(self.now_h(), self.scenario.duration_h), 4),
                "duration_h": self.scenario.duration_h,
                "finished": self.finished,
                "patient": {
                    "mas": snapshot.mas,
                    "signs": snapshot.signs,
                    "vitals": snapshot.vitals.model_dump(),
                    "effect": snapshot.effect,
                },
                "messages": self.messages,
                "actions": [
                    a.model_dump(mode="json")
                    for a in self._actions_in_order()
                    if a.source == "trainee" or self.mode == "guided" or trainer
                ],
            }
            if self.mode == "guided" or trainer:
                status["hints"] = [
                    {"id": item.id, "hint": item.hint or item.description}
                    for item in self.scenario.expected
                ]
                status["timeline"] = [s.model_dump(mode="json") for s in self.timeline]
            return status


def perform(run: ScenarioRun, step: ScriptedAction, role: str = TRAINEE_ROLE) -> None:
    """Do one scripted trainee step on the rig, as the API would."""
    service = run.service
    if step.action == "program_confirmed":
        program = parse_program(step.program or {}, "scripted program")
        proposal = service.propose(program)
        service.confirm(proposal.proposal_id, True, role)
    elif step.action == "start":
        service.start_delivery(role)
    elif step.action == "stop":
        service.stop_delivery(role)
    elif step.action == "alarms_acknowledged":
        service.acknowledge(None, role)
    elif step.action == "refill_withdrawn":
        withdrawn_ml = step.params.get("withdrawn_ml")
        sim = service.bench.sim
        if withdrawn_ml is None and sim is not None:  # what the syringe really gives up
            withdrawn_ml = round(sim.bench.syringe_volume_ml, 2)
        service.refill_withdrawn(float(withdrawn_ml or 0.0), role)
    elif step.action == "refill_fill":
        service.refill_fill(
            float(step.params["volume_ml"]), float(step.params["concentration_ug_per_ml"]), role
        )
    else:
        run.act(step.action, step.params)


def run_fast(
    scenario: Scenario,
    *,
    script: list[ScriptedAction] | None = None,
    mode: str = "assessment",
    trainee: str | None = None,
    data_dir: Path | None = None,
    time_compression: float = FAST_TIME_COMPRESSION,
) -> dict[str, Any]:
    """Run *scenario* to its end on a virtual clock, with *script* as the trainee's actions
    (none: a trainee who does nothing); the report."""
    from rig.service.virtual import VirtualRig

    memory = Path("/dev/shm")  # books thrown away at the end: no need to wait for the disk
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as temporary:
        directory = data_dir or Path(temporary)
        with VirtualRig(directory, time_compression=time_compression) as rig:
            bench_step_s = MAX_TICK_H * 3600.0 / time_compression
            run = ScenarioRun(rig.service, scenario, mode=mode, trainee=trainee)
            pending = sorted(script or [], key=lambda step: step.at_h)
            while not run.finished:
                rig.run(bench_step_s)
                run.tick()
                while pending and not run.finished and pending[0].at_h <= run.now_h():
                    perform(run, pending.pop(0))
                    rig.run(bench_step_s / 10)  # the loop books it
                    run.tick()
            assert run.report is not None
            return run.report


class TrainingDesk:
    """The scenario runner inside the service: one run at a time, ticked by its own thread."""

    def __init__(self, service: RigService, period_s: float = DESK_PERIOD_S) -> None:
        self.service = service
        self.run: ScenarioRun | None = None
        self._period_s = period_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, scenario: Scenario, mode: str, trainee: str | None) -> dict[str, Any]:
        with self._lock:
            if self.run is not None and not self.run.finished:
                raise StateConflict(
                    f"training: scenario {self.run.scenario.name} is running; stop it first"
                )
            self.run = ScenarioRun(self.service, scenario, mode=mode, trainee=trainee)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="training", daemon=True)
                self._thread.start()
            return self.run.status()

    def _loop(self) -> None:
        while not self._stop.wait(self._period_s):
            run = self.run
            if run is not None and not run.finished:
                try:
                    run.tick()
                except Exception:  # the desk survives a failed tick; the next one retries
                    log.exception("training: scenario tick failed")

    def current(self) -> ScenarioRun:
        if self.run is None:
            raise StateConflict("training: no scenario has been started")
        return self.run

    def close(self) -> None:
        self._stop.set()


def reports(service: RigService, limit: int = 20) -> list[dict[str, Any]]:
    """The debrief reports kept in the books, newest first."""
    events = _all_events(service, TRAINING_EVENT_KIND)
    kept = [
        e["detail"] for e in events if isinstance(e.get("detail"), dict) and "score" in e["detail"]
    ]
    return list(reversed(kept))[:limit]


CSV_COLUMNS = [
    "at_h", "kind", "what", "effect", "mas", "heart_rate_per_min", "breathing_rate_per_min",
    "temperature_c", "consciousness", "signs", "detail",
]  # fmt: skip


def debrief_csv(report: dict[str, Any]) -> str:
    """The debrief as one CSV timeline: the patient hourly, every action and fault, the
    checklist items; a summary header first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["scenario", report["scenario"], report["title"]])
    writer.writerow(["trainee", report.get("trainee") or ""])
    writer.writerow(
        ["score", report["points"], report["max_points"], f"mastery={report['mastery']}"]
    )
    writer.writerow(CSV_COLUMNS)
    rows: list[list[Any]] = []
    for entry in report["timeline"]:
        vitals = entry["vitals"]
        rows.append([
            entry["at_h"], "patient", "", entry["effect"], entry["mas"],
            vitals["heart_rate_per_min"], vitals["breathing_rate_per_min"],
            vitals["temperature_c"], vitals["consciousness"], " ".join(entry["signs"]), "",
        ])  # fmt: skip
    for action in report["actions"]:
        rows.append([action["at_h"], action["source"], action["action"]] + [""] * 7
                    + [str(action["params"] or "")])  # fmt: skip
    for item in report["items"]:
        state = "done" if item["done"] else ("missed" if item["scored"] else "not triggered")
        at_h = item["at_h"] if item["at_h"] is not None else item["deadline_h"]
        rows.append([at_h if at_h is not None else "", "expected", item["id"]] + [""] * 7
                    + [f"{state}; weight {item['weight']}"
                       + ("; critical" if item["critical"] else "")])  # fmt: skip
    rows.sort(key=lambda row: float(row[0]) if row[0] != "" else math.inf)
    writer.writerows(rows)
    return out.getvalue()
