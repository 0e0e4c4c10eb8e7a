"""Fast-forward simulation of a program: months of therapy in milliseconds.

Event-driven: a virtual clock jumps straight to each patient-bolus request and to the end; the
engine integrates the plan exactly in between and dates every alarm crossing exactly, so nothing
is ever ticked through.

Bolus-request file (TOML)::

    daily = ["08:00", "12:30", "18:00", "22:00"]   # every simulated day at these times
    at_h = [1.5, 49.0]                              # and at these hours after the start
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml
from rig.common.schedule import parse_hhmm
from rig.therapy.alarms import AlarmCode, AlarmPriority, alarm_spec
from rig.therapy.catheter import DEFAULT_CATHETER_UL, CatheterContents
from rig.therapy.clocks import VirtualClock
from rig.therapy.drugs import DEFAULT_DRUG_LIBRARY, DrugLibrary, LimitWarning
from rig.therapy.engine import TherapyEngine
from rig.therapy.patient import PatientModel, PatientParams, PatientSnapshot
from rig.therapy.programs import Program, TimeOfDay
from rig.therapy.reservoir import (
    DEFAULT_CAPACITY_ML,
    DEFAULT_ERI_AGE_DAYS,
    DEFAULT_LOW_THRESHOLD_ML,
    BatteryState,
    ReservoirState,
    check_reservoir_fits,
)
from rig.therapy.units import DAY, UL_PER_ML, hours

MAX_SIMULATION_DAYS = 3650.0
DEFAULT_START = datetime(2025, 1, 6)  # a Monday, midnight


class BolusRequests(StrictModel):
    """Patient bolus requests: times of day repeated daily, and hours after the start."""

    daily: Annotated[list[TimeOfDay], Field(max_length=96)] = Field(default_factory=list)
    at_h: list[Annotated[float, Field(ge=0, le=MAX_SIMULATION_DAYS * 24, allow_inf_nan=False)]] = (
        Field(default_factory=list)
    )

    def times(self, start: datetime, end: datetime) -> list[datetime]:
        """Every request in [start, end), in order."""
        moments = [start + timedelta(hours=at_h) for at_h in self.at_h]
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        offsets = [timedelta(minutes=parse_hhmm(text)) for text in self.daily]
        while offsets and day < end:
            moments.extend(day + offset for offset in offsets)
            day += DAY
        return sorted(moment for moment in moments if start <= moment < end)


def load_bolus_requests(path: Path | str) -> BolusRequests:
    """Load a bolus-request file (TOML)."""
    data = read_toml(path, "bolus-request file")
    try:
        return BolusRequests.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, str(path))) from None


class SimulationSettings(StrictModel):
    """What the simulation starts from (the ``itbrig simulate`` options)."""

    days: Annotated[float, Field(gt=0, le=MAX_SIMULATION_DAYS, allow_inf_nan=False)]
    start: datetime = DEFAULT_START
    capacity_ml: float = DEFAULT_CAPACITY_ML
    reservoir_ml: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    low_threshold_ml: Annotated[float, Field(ge=0, allow_inf_nan=False)] = DEFAULT_LOW_THRESHOLD_ML
    battery_age_days: Annotated[float, Field(ge=0, le=20 * 365, allow_inf_nan=False)] = 0.0
    eri_age_days: Annotated[float, Field(gt=0, le=20 * 365, allow_inf_nan=False)] = (
        DEFAULT_ERI_AGE_DAYS
    )

    @model_validator(mode="after")
    def _reservoir_fits(self) -> SimulationSettings:
        volume_ml = self.capacity_ml if self.reservoir_ml is None else self.reservoir_ml
        check_reservoir_fits(
            self.capacity_ml, volume_ml, self.low_threshold_ml, volume_name="reservoir_ml"
        )
        return self

    def reservoir(self) -> ReservoirState:
        volume_ml = self.capacity_ml if self.reservoir_ml is None else self.reservoir_ml
        return ReservoirState(
            capacity_ml=self.capacity_ml,
            volume_ml=volume_ml,
            low_threshold_ml=self.low_threshold_ml,
        )


def parse_settings(data: dict) -> SimulationSettings:
    """Validate simulation options; :class:`InputError` names each bad option."""
    try:
        return SimulationSettings.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, "simulate")) from None


class AlarmRecord(StrictModel):
    """An alarm raised during the simulation, in hours after the start."""

    code: str
    priority: AlarmPriority
    at_h: float


class PatientBolusCount(StrictModel):
    granted: int
    denied: int
    denied_by_reason: dict[str, int]


class PatientResult(StrictModel):
    """The patient over the simulated period: one snapshot at the start and every hour."""

    name: str
    adapted_ug_per_day: float
    reached_ug: float
    timeline: list[PatientSnapshot]


class SimulationResult(StrictModel):
    """What happened over the simulated period."""

    mode: str
    start: datetime
    end: datetime
    days: float
    daily_dose_ug_per_day: float
    rate_ml_per_day: float
    rate_ul_per_h: float
    delivered_ug: float
    delivered_ml: float
    reservoir_start_ml: float
    reservoir_end_ml: float
    hours_to_low_reservoir: float | None
    hours_to_empty: float | None
    alarms: list[AlarmRecord]
    patient_boluses: PatientBolusCount
    warnings: list[LimitWarning]
    patient: PatientResult | None = None


class _PatientFollower:
    """The patient fed by what leaves the catheter tip as the pump delivers (catheter first)."""

    def __init__(self, params: PatientParams, line_ug_per_ml: float, line_volume_ul: float) -> None:
        self.model = PatientModel(params)
        self.catheter = CatheterContents.filled(line_ug_per_ml, line_volume_ul)
        self.delivered_ul = 0.0
        self.timeline = [self.model.snapshot()]

    def observe(self, at_h: float, delivered_ul: float, concentration_ug_per_ml: float) -> None:
        before_ug = self.catheter.patient_ug
        pushed_ul = delivered_ul - self.delivered_ul
        self.catheter = self.catheter.pushed(pushed_ul, concentration_ug_per_ml)
        self.delivered_ul = delivered_ul
        self.model.advance(at_h - self.model.at_h, self.catheter.patient_ug - before_ug)

    def result(self) -> PatientResult:
        params = self.model.params
        return PatientResult(
            name=params.name,
            adapted_ug_per_day=params.adapted_ug_per_day or 0.0,
            reached_ug=self.model.reached_ug,
            timeline=self.timeline,
        )


def _moments(
    start: datetime, end: datetime, requests: list[datetime], hourly: bool
) -> list[tuple[datetime, bool]]:
    """Bolus requests (True) and, with *hourly*, every whole hour up to *end* (False), in order."""
    moments = [(moment, True) for moment in requests]
    if hourly:
        count = math.ceil(hours(end - start))
        moments += [(start + timedelta(hours=h), False) for h in range(1, count)]
    moments.append((end, False))
    return sorted(moments, key=lambda item: item[0])


def simulate(
    program: Program,
    settings: SimulationSettings,
    requests: BolusRequests | None = None,
    library: DrugLibrary = DEFAULT_DRUG_LIBRARY,
    patient: PatientParams | None = None,
) -> SimulationResult:
    """Run *program* from a freshly filled pump for ``settings.days`` patient days, with
    *patient* (if given) following the dose that reaches it, at least hourly."""
    start = settings.start
    end = start + timedelta(days=settings.days)
    clock = VirtualClock(start)
    battery = BatteryState(
        implanted_at=start - timedelta(days=settings.battery_age_days),
        eri_age_days=settings.eri_age_days,
    )
    reservoir = settings.reservoir()
    engine = TherapyEngine.new(clock, reservoir=reservoir, battery=battery, library=library)
    proposal = engine.propose(program)
    engine.confirm(proposal.proposal_id, accept_warnings=True)
    refusals: Counter[str] = Counter()
    granted = 0
    follower = None
    if patient is not None:
        # A bridge bolus starts with the old drug in the line, of the catheter it describes.
        old_ug_per_ml = getattr(program.root, "old_concentration_ug_per_ml", None)
        line = getattr(program.root, "catheter", None)
        follower = _PatientFollower(
            patient.adapted_to(proposal.new.daily_dose_ug_per_day),
            old_ug_per_ml or program.concentration_ug_per_ml,
            line.volume_ul if line is not None else DEFAULT_CATHETER_UL,
        )
    request_times = (requests or BolusRequests()).times(start, end)
    for moment, is_request in _moments(start, end, request_times, follower is not None):
        clock.set(moment)
        if is_request:
            decision = engine.request_patient_bolus()
            if decision.granted:
                granted += 1
            else:
                refusals[decision.reason.value if decision.reason else "unknown"] += 1
        engine.advance()
        if follower is not None:
            follower.observe(
                hours(moment - start), engine.state.delivered_ul, program.concentration_ug_per_ml
            )
            if not is_request:
                follower.timeline.append(follower.model.snapshot())
    alarms = [
        AlarmRecord(
            code=event.code,
            priority=alarm_spec(event.code).priority,
            at_h=hours(event.at - start),
        )
        for event in engine.pop_events()
        if event.kind == "alarm_raised" and event.code is not None
    ]

    def first(code: AlarmCode) -> float | None:
        return next((alarm.at_h for alarm in alarms if alarm.code == code), None)

    state = engine.state
    return SimulationResult(
        mode=program.mode,
        start=start,
        end=end,
        days=settings.days,
        daily_dose_ug_per_day=proposal.new.daily_dose_ug_per_day,
        rate_ml_per_day=proposal.new.rate_ml_per_day,
        rate_ul_per_h=proposal.new.rate_ul_per_h,
        delivered_ug=state.delivered_ug,
        delivered_ml=state.delivered_ul / UL_PER_ML,
        reservoir_start_ml=reservoir.volume_ml,
        reservoir_end_ml=state.reservoir.volume_ml,
        hours_to_low_reservoir=first(AlarmCode.LOW_RESERVOIR),
        hours_to_empty=first(AlarmCode.EMPTY_RESERVOIR),
        alarms=alarms,
        patient_boluses=PatientBolusCount(
            granted=granted, denied=sum(refusals.values()), denied_by_reason=dict(refusals)
        ),
        warnings=proposal.warnings,
        patient=None if follower is None else follower.result(),
    )


def format_result(result: SimulationResult, source: str) -> str:
    """The result as readable text."""

    def when(at_h: float | None) -> str:
        return "not reached" if at_h is None else f"{at_h:.1f} h ({at_h / 24:.1f} days)"

    lines = [
        f"{source}: {result.mode}, simulated {result.days:g} patient days from "
        f"{result.start:%Y-%m-%d %H:%M}",
        f"  programmed     {result.daily_dose_ug_per_day:g} µg/day = "
        f"{result.rate_ml_per_day:.3f} mL/day = {result.rate_ul_per_h:.2f} µL/h",
        f"  delivered      {result.delivered_ug:.1f} µg in {result.delivered_ml:.3f} mL",
        f"  reservoir      {result.reservoir_start_ml:.3f} mL -> {result.reservoir_end_ml:.3f} mL",
        f"  low reservoir  {when(result.hours_to_low_reservoir)}",
        f"  empty          {when(result.hours_to_empty)}",
        f"  patient bolus  {result.patient_boluses.granted} granted, "
        f"{result.patient_boluses.denied} denied"
        + (
            " ("
            + ", ".join(f"{k} {v}" for k, v in result.patient_boluses.denied_by_reason.items())
            + ")"
            if result.patient_boluses.denied
            else ""
        ),
    ]
    for warning in result.warnings:
        lines.append(f"  warning        {warning.field}: {warning.message}")
    lines.append(f"  alarms         {len(result.alarms) or 'none'}")
    for alarm in result.alarms:
        title = alarm_spec(alarm.code).title
        priority = alarm.priority.value
        lines.append(f"    +{alarm.at_h:9.2f} h  {priority:<6}  {alarm.code}  ({title})")
    if result.patient is not None:
        lines += _patient_lines(result.patient)
    return "\n".join(lines)


def _patient_lines(patient: PatientResult) -> list[str]:
    """The patient's course: the start, the effect's extremes and every change of signs."""
    lines = [
        f"  patient        {patient.name}, adapted to {patient.adapted_ug_per_day:g} µg/day; "
        f"{patient.reached_ug:.1f} µg reached the spinal fluid"
    ]
    previous: tuple[str, list[str]] | None = None
    for entry in patient.timeline:
        shown = (entry.mas, entry.signs)
        if shown != previous:
            signs = ", ".join(entry.signs) or "no signs"
            lines.append(
                f"    +{entry.at_h:9.2f} h  effect {entry.effect:5.2f}  MAS {entry.mas:<2}  {signs}"
            )
            previous = shown
    return lines
