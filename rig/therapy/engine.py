"""Therapy engine: the pump's books and rules, in patient time, with no hardware.

The engine holds an :class:`EngineState` that describes the pump as of ``updated_at`` (program,
reservoir, battery, patient boluses, active alarms, delivered totals) and the
:class:`~rig.therapy.plan.DeliveryPlan` that follows from it. Time passing is accounted exactly by
:meth:`TherapyEngine.advance` (alarm crossings get their exact patient time, however late the call
comes). Every change is two-step: :meth:`~TherapyEngine.propose` shows old and new settings side by
side and changes nothing; :meth:`~TherapyEngine.confirm` applies a proposal as a whole, unless the
state changed since (stale) or soft-limit warnings were not accepted.

The state is serialisable (:meth:`TherapyEngine.to_dict` / :meth:`TherapyEngine.from_dict`);
pending proposals are not persisted (after a restart, propose again).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationError

from rig.common.inputs import InputError, StrictModel, describe_validation_error
from rig.therapy.alarms import (
    CATALOGUE,
    AlarmCode,
    AlarmPriority,
    AlarmSpec,
    alarm_spec,
    highest_priority,
)
from rig.therapy.clocks import Clock
from rig.therapy.drugs import DEFAULT_DRUG_LIBRARY, DrugLibrary, LimitWarning, check_program
from rig.therapy.patient_bolus import (
    BolusRefusal,
    allowed_per_24h,
    earliest_allowed,
    greedy_bolus_times,
    starts_in_window,
    window_refusal,
)
from rig.therapy.plan import (
    PHASE_BASAL,
    PHASE_PATIENT_BOLUS,
    PHASE_PERIODIC_BOLUS,
    DeliveryPlan,
    Overlay,
    Regimen,
    bolus_overlay,
    build_plan,
    compile_regimen,
)
from rig.therapy.programs import PatientBolus, Program
from rig.therapy.reservoir import (
    EMPTY_ML,
    BatteryState,
    BatteryStatus,
    ReservoirForecast,
    ReservoirState,
    battery_status,
    forecast_reservoir,
)
from rig.therapy.units import DAY, UL_PER_ML, ml_per_day, rate_ul_per_h, volume_ul

# Conditions the engine owns: raised and cleared only by the engine's own bookkeeping.
ENGINE_ALARMS = frozenset(
    {
        AlarmCode.LOW_RESERVOIR,
        AlarmCode.EMPTY_RESERVOIR,
        AlarmCode.ERI,
        AlarmCode.END_OF_SERVICE,
    }
)
# Pending proposals kept per engine (older and stale ones are dropped).
MAX_PENDING_PROPOSALS = 16
PATIENT_BOLUS_PHASES = frozenset({PHASE_BASAL, PHASE_PATIENT_BOLUS, PHASE_PERIODIC_BOLUS})


def _known_alarm(code: str) -> str:
    alarm_spec(code)
    return code


AlarmCodeText = Annotated[str, AfterValidator(_known_alarm)]


class GrantedBolus(StrictModel):
    """A patient bolus that was granted (kept 24 h for the lockout and daily-maximum rules)."""

    start: datetime
    dose_ug: float
    duration_min: float
    cancelled_at: datetime | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration_min)


class ActiveAlarm(StrictModel):
    """An alarm condition in force."""

    code: AlarmCodeText
    since: datetime
    acknowledged: bool = False


class EngineState(StrictModel):
    """Everything the engine knows, as of ``updated_at`` (patient time)."""

    revision: int = 0
    updated_at: datetime
    program: Program | None = None
    program_started_at: datetime | None = None
    basal_started_at: datetime | None = None
    one_shot_done_ul: float = 0.0
    halted: bool = False
    reservoir: ReservoirState = ReservoirState()
    battery: BatteryState
    patient_boluses: list[GrantedBolus] = Field(default_factory=list)
    alarms: list[ActiveAlarm] = Field(default_factory=list)
    delivered_ul: float = 0.0
    delivered_ug: float = 0.0


EventKind = Literal[
    "alarm_raised",
    "alarm_cleared",
    "alarm_acknowledged",
    "program_confirmed",
    "patient_bolus_granted",
    "patient_bolus_refused",
    "reservoir_set",
    "delivery_resumed",
    "delivery_halted",
]


class EngineEvent(StrictModel):
    """Something that happened, for the event log (patient time)."""

    at: datetime
    kind: EventKind
    code: str | None = None
    priority: AlarmPriority | None = None
    detail: str = ""


class SettingsSummary(StrictModel):
    """One side of the side-by-side comparison: a program and what it does to the reservoir."""

    mode: str
    drug: str | None
    concentration_ug_per_ml: float | None
    daily_dose_ug_per_day: float
    rate_ml_per_day: float
    rate_ul_per_h: float
    one_shot_volume_ul: float
    patient_bolus: PatientBolus | None
    reservoir: ReservoirForecast
    worst_case: ReservoirForecast | None = Field(
        default=None, description="forecast if every allowed patient bolus is taken"
    )


class Proposal(StrictModel):
    """A proposed change: old and new settings side by side; nothing changes until confirmed."""

    proposal_id: str
    created_at: datetime
    base_revision: int
    time_compression: float
    program: Program
    old_program: Program | None = Field(default=None, description="the program in force")
    old: SettingsSummary
    new: SettingsSummary
    warnings: list[LimitWarning]


class BolusDecision(StrictModel):
    """Answer to a patient bolus request."""

    granted: bool
    at: datetime
    reason: BolusRefusal | None = None
    message: str
    dose_ug: float | None = None
    ends_at: datetime | None = None
    next_allowed_at: datetime | None = None


class TherapyStatus(StrictModel):
    """The engine's status at one instant (patient time; the time-compression factor included)."""

    now: datetime
    time_compression: float
    revision: int
    mode: str
    phase: str
    halted: bool
    rate_ul_per_h_now: float
    next_change_at: datetime | None
    settings: SettingsSummary
    reservoir: ReservoirState
    battery: BatteryStatus
    alarms: list[ActiveAlarm]
    highest_priority: AlarmPriority | None
    delivered_ul: float
    delivered_ug: float
    patient_boluses_last_24h: int
    program: Program | None = Field(default=None, description="the program in force, in full")


class ProposalError(InputError):
    """A confirmation was refused; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TherapyEngine:
    """The therapy engine over a patient-time clock."""

    def __init__(
        self, state: EngineState, clock: Clock, library: DrugLibrary = DEFAULT_DRUG_LIBRARY
    ) -> None:
        self.clock = clock
        self.library = library
        self._state = state
        self._plan = self._build_plan(state)
        self._proposals: dict[str, Proposal] = {}
        self._events: list[EngineEvent] = []

    # -- construction and persistence ------------------------------------------------------
    @classmethod
    def new(
        cls,
        clock: Clock,
        *,
        reservoir: ReservoirState | None = None,
        battery: BatteryState | None = None,
        library: DrugLibrary = DEFAULT_DRUG_LIBRARY,
    ) -> TherapyEngine:
        """A stopped pump at the clock's time (battery implanted now unless given)."""
        now = clock.now()
        state = EngineState(
            updated_at=now,
            reservoir=reservoir or ReservoirState(),
            battery=battery or BatteryState(implanted_at=now),
        )
        engine = cls(state, clock, library)
        engine._account(now)
        return engine

    def to_dict(self) -> dict:
        """The engine state as JSON-compatible data."""
        return self._state.model_dump(mode="json")

    @classmethod
    def from_dict(
        cls, data: dict, clock: Clock, library: DrugLibrary = DEFAULT_DRUG_LIBRARY
    ) -> TherapyEngine:
        """Restore an engine from :meth:`to_dict` data."""
        try:
            state = EngineState.model_validate_json(json.dumps(data))
        except (ValidationError, TypeError, ValueError) as error:
            detail = (
                describe_validation_error(error, "engine state")
                if isinstance(error, ValidationError)
                else f"engine state: {error}"
            )
            raise InputError(detail) from None
        return cls(state, clock, library)

    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def plan(self) -> DeliveryPlan:
        """The delivery plan in force (replaced, with a new origin, on every state change)."""
        return self._plan

    @property
    def regimen(self) -> Regimen:
        return compile_regimen(self._state.program)

    def checkpoint(self) -> tuple[object, ...]:
        """Everything the engine holds, for :meth:`rollback` (a change that could not be
        recorded is undone as a whole)."""
        return (self._state, self._plan, dict(self._proposals), list(self._events))

    def rollback(self, checkpoint: tuple[object, ...]) -> None:
        """Back to a :meth:`checkpoint` (time passed since is accounted again on the next call)."""
        state, plan, proposals, events = checkpoint
        self._state, self._plan = state, plan  # type: ignore[assignment]
        self._proposals = dict(proposals)  # type: ignore[call-overload]
        self._events = list(events)  # type: ignore[call-overload]

    def pop_events(self) -> list[EngineEvent]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # -- time ------------------------------------------------------------------------------
    def advance(self) -> list[EngineEvent]:
        """Account delivery up to the clock's time; returns the events this raised."""
        before = len(self._events)
        self._account(self.clock.now())
        return self._events[before:]

    def next_event_at(self) -> datetime | None:
        """The next instant something happens on its own (rate change, alarm, battery)."""
        self.advance()
        state, plan, now = self._state, self._plan, self._state.updated_at
        candidates = [plan.next_change_after(now)]
        active = self._active_codes()
        delivered_ul = plan.cumulative_volume_ul(now)
        for code, threshold_ml in (
            (AlarmCode.LOW_RESERVOIR, state.reservoir.low_threshold_ml),
            (AlarmCode.EMPTY_RESERVOIR, 0.0),
        ):
            left_ml = state.reservoir.volume_ml - threshold_ml
            if code not in active and left_ml > 0:
                candidates.append(plan.time_at_cumulative_ul(delivered_ul + left_ml * UL_PER_ML))
        for code, moment in (
            (AlarmCode.ERI, state.battery.eri_at),
            (AlarmCode.END_OF_SERVICE, state.battery.end_of_service_at),
        ):
            if code not in active:
                candidates.append(moment)
        future = [moment for moment in candidates if moment is not None and moment > now]
        return min(future, default=None)

    def _account(self, now: datetime) -> None:
        state = self._state
        if now < state.updated_at:
            raise InputError(f"time: {now.isoformat()} is before the last update")
        plan = self._plan
        start_ul = plan.cumulative_volume_ul(state.updated_at)
        end_ul = plan.cumulative_volume_ul(now)
        delivered_ul = end_ul - start_ul
        reservoir = state.reservoir
        volume0_ml = reservoir.volume_ml
        volume1_ml = max(0.0, volume0_ml - delivered_ul / UL_PER_ML)
        if volume1_ml <= EMPTY_ML:
            volume1_ml = 0.0
        active = self._active_codes()
        raised: list[tuple[datetime, AlarmCode]] = []

        def crossing(threshold_ml: float) -> datetime:
            if volume0_ml <= threshold_ml:
                return state.updated_at
            moment = plan.time_at_cumulative_ul(start_ul + (volume0_ml - threshold_ml) * UL_PER_ML)
            return min(moment or now, now)

        if AlarmCode.LOW_RESERVOIR not in active and volume1_ml <= reservoir.low_threshold_ml:
            raised.append((crossing(reservoir.low_threshold_ml), AlarmCode.LOW_RESERVOIR))
        if AlarmCode.EMPTY_RESERVOIR not in active and volume1_ml <= EMPTY_ML:
            raised.append((crossing(0.0), AlarmCode.EMPTY_RESERVOIR))
        for code, moment in (
            (AlarmCode.ERI, state.battery.eri_at),
            (AlarmCode.END_OF_SERVICE, state.battery.end_of_service_at),
        ):
            if code not in active and moment <= now:
                raised.append((max(moment, state.updated_at), code))
        raised.sort()
        regimen = self.regimen
        one_shot_done = regimen.one_shot_volume_ul - max(0.0, plan.one_shot_remaining_ul - end_ul)
        basal_started_at = state.basal_started_at
        one_shots_over = end_ul >= plan.one_shot_remaining_ul
        if basal_started_at is None and state.program is not None and one_shots_over:
            one_shots_end = plan.time_at_cumulative_ul(plan.one_shot_remaining_ul)
            basal_started_at = min(one_shots_end or now, now)
        self._state = state.model_copy(
            update={
                "updated_at": now,
                "reservoir": reservoir.model_copy(update={"volume_ml": volume1_ml}),
                "one_shot_done_ul": max(state.one_shot_done_ul, one_shot_done),
                "basal_started_at": basal_started_at,
                "delivered_ul": state.delivered_ul + delivered_ul,
                "delivered_ug": state.delivered_ug + plan.dose_ug(state.updated_at, now),
                "alarms": [
                    *state.alarms,
                    *(ActiveAlarm(code=code.value, since=moment) for moment, code in raised),
                ],
            }
        )
        for moment, code in raised:
            self._emit(moment, "alarm_raised", code)

    # -- two-step program change -----------------------------------------------------------
    def propose(self, program: Program) -> Proposal:
        """Compare *program* with the settings in force; hard limits raise :class:`InputError`."""
        self.advance()
        state = self._state
        warnings = check_program(
            program,
            self.library,
            capacity_ml=state.reservoir.capacity_ml,
            volume_ml=state.reservoir.volume_ml,
            source="program",
        )
        now = state.updated_at
        new_state = self._with_program(program)
        proposal = Proposal(
            proposal_id=uuid.uuid4().hex,
            created_at=now,
            base_revision=state.revision,
            time_compression=self.clock.time_compression,
            program=program,
            old_program=state.program,
            old=self._summary(state, self._plan),
            new=self._summary(new_state, self._build_plan(new_state)),
            warnings=warnings,
        )
        live = [p for p in self._proposals.values() if p.base_revision == state.revision]
        kept = live[-(MAX_PENDING_PROPOSALS - 1) :]
        self._proposals = {p.proposal_id: p for p in [*kept, proposal]}
        return proposal

    def confirm(self, proposal_id: str, accept_warnings: bool = False) -> TherapyStatus:
        """Apply a proposal: refused if unknown, stale, or with warnings not accepted."""
        proposal = self._proposals.get(proposal_id)
        if proposal is None:
            raise ProposalError("unknown_proposal", f"proposal_id: no proposal {proposal_id!r}")
        if proposal.base_revision != self._state.revision:
            raise ProposalError(
                "stale_proposal",
                "proposal_id: the pump's settings changed since this proposal; propose again",
            )
        if proposal.warnings and not accept_warnings:
            raise ProposalError(
                "warnings_not_accepted",
                f"accept_warnings: the proposal has {len(proposal.warnings)} soft-limit "
                "warning(s); confirm with accept_warnings to apply it",
            )
        self.advance()
        self._commit(self._with_program(proposal.program))
        self._proposals.clear()
        self._emit(self._state.updated_at, "program_confirmed", detail=proposal.program.mode)
        return self.status()

    def _with_program(self, program: Program) -> EngineState:
        state = self._state
        now = state.updated_at
        return state.model_copy(
            update={
                "program": program,
                "program_started_at": now,
                "basal_started_at": now if not compile_regimen(program).one_shots else None,
                "one_shot_done_ul": 0.0,
                "patient_boluses": self._cancel_running_boluses(now),
            }
        )

    # -- patient bolus ---------------------------------------------------------------------
    def request_patient_bolus(self) -> BolusDecision:
        """A patient presses the bolus button: grant it or refuse it with a reason."""
        self.advance()
        state = self._state
        now = state.updated_at
        regimen = self.regimen
        block = regimen.patient_bolus
        reason, message = self._bolus_refusal(block, now)
        if reason is not None or block is None:
            refusal = reason or BolusRefusal.NOT_AVAILABLE
            self._emit(now, "patient_bolus_refused", detail=refusal.value)
            if refusal is BolusRefusal.DOSE_LIMIT:
                self._emit(now, "alarm_raised", AlarmCode.DOSE_LIMIT)
            return BolusDecision(
                granted=False,
                at=now,
                reason=refusal,
                message=message,
                next_allowed_at=self._next_allowed(block, now),
            )
        granted = GrantedBolus(start=now, dose_ug=block.dose_ug, duration_min=block.duration_min)
        kept = [b for b in state.patient_boluses if b.start > now - DAY or b.end > now]
        self._commit(state.model_copy(update={"patient_boluses": [*kept, granted]}))
        self._emit(now, "patient_bolus_granted", detail=f"{block.dose_ug:g} ug")
        return BolusDecision(
            granted=True,
            at=now,
            message=f"bolus of {block.dose_ug:g} µg over {block.duration_min:g} min",
            dose_ug=block.dose_ug,
            ends_at=granted.end,
            next_allowed_at=self._next_allowed(block, now),
        )

    def _bolus_refusal(
        self, block: PatientBolus | None, now: datetime
    ) -> tuple[BolusRefusal | None, str]:
        state = self._state
        phase = self._plan.segment_at(now).phase
        if block is None:
            return BolusRefusal.NOT_AVAILABLE, "the program has no patient bolus"
        blocking = [a.code for a in state.alarms if alarm_spec(a.code).blocks_bolus]
        if blocking:
            return BolusRefusal.ALARM_ACTIVE, f"an alarm is active ({', '.join(blocking)})"
        if state.halted or phase not in PATIENT_BOLUS_PHASES:
            return BolusRefusal.NOT_AVAILABLE, f"patient bolus is not available now ({phase})"
        starts = [b.start for b in state.patient_boluses]
        reason = window_refusal(block, starts, now, self._allowed_for(self._state, block))
        if reason is BolusRefusal.LOCKOUT:
            return (
                reason,
                f"in lockout for {block.lockout_min:g} min (patient time) after the last bolus",
            )
        if reason is BolusRefusal.MAX_PER_24H:
            return reason, f"the maximum of {block.max_per_24h} boluses per 24 h is reached"
        if reason is BolusRefusal.DOSE_LIMIT:
            return reason, "the bolus would pass the daily dose limit"
        needed_ul = volume_ul(block.dose_ug, self.regimen.concentration_ug_per_ml)
        if needed_ul > state.reservoir.volume_ml * UL_PER_ML:
            return BolusRefusal.INSUFFICIENT_VOLUME, "not enough drug in the reservoir"
        return None, ""

    def _next_allowed(self, block: PatientBolus | None, now: datetime) -> datetime | None:
        if block is None:
            return None
        starts = [b.start for b in self._state.patient_boluses]
        return earliest_allowed(block, starts, now, self._allowed_for(self._state, block))

    def _cancel_running_boluses(self, now: datetime) -> list[GrantedBolus]:
        return [
            b.model_copy(update={"cancelled_at": now})
            if b.cancelled_at is None and b.end > now
            else b
            for b in self._state.patient_boluses
        ]

    # -- reservoir and alarms --------------------------------------------------------------
    def set_reservoir(
        self,
        volume_ml: float,
        capacity_ml: float | None = None,
        low_threshold_ml: float | None = None,
    ) -> TherapyStatus:
        """Enter the reservoir volume after a fill (and optionally capacity and threshold)."""
        self.advance()
        state = self._state
        data = state.reservoir.model_dump()
        data["volume_ml"] = volume_ml
        if capacity_ml is not None:
            data["capacity_ml"] = capacity_ml
        if low_threshold_ml is not None:
            data["low_threshold_ml"] = low_threshold_ml
        try:
            reservoir = ReservoirState.model_validate(data)
        except ValidationError as error:
            raise InputError(describe_validation_error(error, "reservoir")) from None
        cleared = []
        if not reservoir.is_low:
            cleared.append(AlarmCode.LOW_RESERVOIR)
        if not reservoir.is_empty:
            cleared.append(AlarmCode.EMPTY_RESERVOIR)
        now = state.updated_at
        alarms = [a for a in state.alarms if a.code not in cleared]
        for alarm in state.alarms:
            if alarm.code in cleared:
                self._emit(now, "alarm_cleared", AlarmCode(alarm.code))
        self._commit(state.model_copy(update={"reservoir": reservoir, "alarms": alarms}))
        self._emit(now, "reservoir_set", detail=f"{reservoir.volume_ml:g} mL")
        return self.status()

    def raise_alarm(self, code: str, detail: str = "") -> None:
        """Raise an alarm detected outside the engine (flow monitor, watchdog, e-stop...).

        Alarms that stop delivery halt the pump and cancel any running patient bolus.
        """
        spec = self._service_alarm(code)
        self.advance()
        state = self._state
        now = state.updated_at
        self._emit(now, "alarm_raised", spec.code, detail)
        if not spec.latched or spec.code in self._active_codes():
            return
        update: dict = {"alarms": [*state.alarms, ActiveAlarm(code=spec.code.value, since=now)]}
        if spec.stops_delivery:
            update |= {"halted": True, "patient_boluses": self._cancel_running_boluses(now)}
        self._commit(state.model_copy(update=update))

    def clear_alarm(self, code: str) -> None:
        """The condition behind a service alarm is gone (delivery stays halted until resumed)."""
        spec = self._service_alarm(code)
        self.advance()
        state = self._state
        if spec.code not in self._active_codes():
            return
        self._commit(
            state.model_copy(update={"alarms": [a for a in state.alarms if a.code != spec.code]})
        )
        self._emit(state.updated_at, "alarm_cleared", spec.code)

    def acknowledge_alarm(self, code: str) -> None:
        """Mark an active alarm as acknowledged (it stays active until its condition clears)."""
        spec = alarm_spec(code)
        self.advance()
        state = self._state
        if spec.code not in self._active_codes():
            raise InputError(f"code: alarm {code!r} is not active")
        alarms = [
            a.model_copy(update={"acknowledged": True}) if a.code == spec.code else a
            for a in state.alarms
        ]
        self._state = state.model_copy(update={"alarms": alarms})
        self._emit(state.updated_at, "alarm_acknowledged", spec.code)

    def halt(self) -> TherapyStatus:
        """Stop delivery now (the program is kept; :meth:`resume` continues it)."""
        self.advance()
        state = self._state
        if not state.halted:
            now = state.updated_at
            self._commit(
                state.model_copy(
                    update={"halted": True, "patient_boluses": self._cancel_running_boluses(now)}
                )
            )
            self._emit(now, "delivery_halted")
        return self.status()

    def resume(self) -> TherapyStatus:
        """Resume delivery after a halt, once no alarm that stops delivery is active."""
        self.advance()
        state = self._state
        stopping = [
            a.code
            for a in state.alarms
            if alarm_spec(a.code).stops_delivery and a.code not in ENGINE_ALARMS
        ]
        if stopping:
            raise InputError(f"resume: clear these alarms first: {', '.join(stopping)}")
        if state.halted:
            self._commit(state.model_copy(update={"halted": False}))
            self._emit(state.updated_at, "delivery_resumed")
        return self.status()

    def _service_alarm(self, code: str) -> AlarmSpec:
        try:
            spec = alarm_spec(code)
        except ValueError:
            raise InputError(
                f"code: unknown alarm {code!r}; allowed: {', '.join(c.value for c in CATALOGUE)}"
            ) from None
        if spec.code in ENGINE_ALARMS:
            raise InputError(f"code: {code!r} is raised and cleared by the engine itself")
        return spec

    # -- status ----------------------------------------------------------------------------
    def status(self) -> TherapyStatus:
        """Everything a display needs, at the clock's time."""
        self.advance()
        state, plan = self._state, self._plan
        now = state.updated_at
        active = [a.code for a in state.alarms]
        segment = plan.segment_at(now)
        return TherapyStatus(
            now=now,
            time_compression=self.clock.time_compression,
            revision=state.revision,
            mode=state.program.mode if state.program else "stopped",
            phase=segment.phase,
            halted=state.halted,
            rate_ul_per_h_now=segment.rate_ul_per_h,
            next_change_at=plan.next_change_after(now),
            settings=self._summary(state, plan),
            reservoir=state.reservoir,
            battery=battery_status(state.battery, now),
            alarms=state.alarms,
            highest_priority=highest_priority(active),
            delivered_ul=state.delivered_ul,
            delivered_ug=state.delivered_ug,
            patient_boluses_last_24h=len(
                starts_in_window([b.start for b in state.patient_boluses], now)
            ),
            program=state.program,
        )

    def _summary(self, state: EngineState, plan: DeliveryPlan) -> SettingsSummary:
        program = state.program
        regimen = compile_regimen(program)
        now = state.updated_at
        daily_ug = program.max_daily_total_ug() if program else 0.0
        conc = program.concentration_ug_per_ml if program else None
        worst_case = None
        block = regimen.patient_bolus
        if block is not None:
            worst_plan = self._build_plan(state, worst_case_block=block)
            worst_case = forecast_reservoir(worst_plan, now, state.reservoir)
        return SettingsSummary(
            mode=program.mode if program else "stopped",
            drug=program.drug if program else None,
            concentration_ug_per_ml=conc,
            daily_dose_ug_per_day=daily_ug,
            rate_ml_per_day=ml_per_day(daily_ug, conc) if conc else 0.0,
            rate_ul_per_h=rate_ul_per_h(daily_ug, conc) if conc else 0.0,
            one_shot_volume_ul=regimen.one_shot_volume_ul,
            patient_bolus=block,
            reservoir=forecast_reservoir(plan, now, state.reservoir),
            worst_case=worst_case,
        )

    # -- internals -------------------------------------------------------------------------
    def _active_codes(self) -> set[str]:
        return {a.code for a in self._state.alarms}

    def _emit(
        self, at: datetime, kind: EventKind, code: AlarmCode | None = None, detail: str = ""
    ) -> None:
        priority = alarm_spec(code).priority if code is not None else None
        self._events.append(
            EngineEvent(
                at=at,
                kind=kind,
                code=code.value if code else None,
                priority=priority,
                detail=detail,
            )
        )

    def _commit(self, state: EngineState) -> None:
        """Replace the state (one revision more) and the plan, as a whole."""
        new_state = state.model_copy(update={"revision": state.revision + 1})
        plan = self._build_plan(new_state)
        self._state, self._plan = new_state, plan

    def _build_plan(
        self, state: EngineState, worst_case_block: PatientBolus | None = None
    ) -> DeliveryPlan:
        regimen = compile_regimen(state.program)
        conc = regimen.concentration_ug_per_ml
        origin = state.updated_at
        overlays = [
            bolus_overlay(b.start, b.dose_ug, b.duration_min, conc)
            for b in state.patient_boluses
            if b.cancelled_at is None and b.end > origin
        ]
        extra = []
        if worst_case_block is not None:
            starts = [b.start for b in state.patient_boluses]
            allowed = self._allowed_for(state, worst_case_block)

            def worst_case(basal_start: datetime) -> Iterator[Overlay]:
                for start in greedy_bolus_times(worst_case_block, starts, basal_start, allowed):
                    yield bolus_overlay(
                        start, worst_case_block.dose_ug, worst_case_block.duration_min, conc
                    )

            extra.append(worst_case)
        return build_plan(
            regimen,
            origin,
            one_shot_done_ul=state.one_shot_done_ul,
            overlays=overlays,
            extra_overlays=extra,
            stop_at=state.battery.end_of_service_at,
            volume_cap_ul=state.reservoir.volume_ml * UL_PER_ML,
            halted=state.halted,
            scheduled_from=state.basal_started_at,
        )

    def _allowed_for(self, state: EngineState, block: PatientBolus) -> int:
        program = state.program
        entry = self.library.drugs.get(program.drug) if program is not None else None
        if entry is None or program is None or block.dose_ug > entry.bolus_hard_limit_ug:
            return 0
        return allowed_per_24h(
            block, program.max_daily_total_ug(), entry.daily_hard_limit_ug_per_day
        )
