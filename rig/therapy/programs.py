"""Dose programs: every infusion mode of the implanted pump, as validated pydantic models.

A program names the drug and its concentration and one ``mode``; priming and bridge boluses carry
the program that follows them in ``then``. The same schema serves program files (TOML) and the
HTTP API (JSON): ``Program.model_json_schema()``. Limits that depend on the drug library or on the
reservoir are checked by :func:`rig.therapy.drugs.check_program`;
:func:`rig.therapy.drugs.parse_program` runs both.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, RootModel, model_validator

from rig.common.inputs import StrictModel, whole_number
from rig.common.schedule import MINUTES_PER_DAY, DaySchedule, parse_hhmm, schedule_daily_total_ug
from rig.therapy.units import WEEKDAYS

MAX_FLEX_STEPS = 13
MAX_DOSE_UG_PER_DAY = 100_000.0
MAX_BOLUS_UG = 100_000.0
MAX_CONCENTRATION_UG_PER_ML = 100_000.0
MIN_PRIMING_UL_PER_H = 1.0
MAX_PRIMING_H = 24.0


def _check_time_of_day(text: str) -> str:
    parse_hhmm(text)
    return text


TimeOfDay = Annotated[
    str,
    AfterValidator(_check_time_of_day),
    Field(
        description="time of day HH:MM, 00:00 to 23:59",
        examples=["08:30"],
        # The rule _check_time_of_day enforces (with a message naming the value), as a schema.
        json_schema_extra={"pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9]$"},
    ),
]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Lower bounds are the programmer's resolution (0.1 µg, 1 min): smaller values mean nothing
# clinically and would only stress the arithmetic.
DoseUgPerDay = Annotated[float, Field(ge=0.1, le=MAX_DOSE_UG_PER_DAY, allow_inf_nan=False)]
BolusUg = Annotated[float, Field(ge=0.1, le=MAX_BOLUS_UG, allow_inf_nan=False)]
DurationMin = Annotated[float, Field(ge=1, le=MINUTES_PER_DAY, allow_inf_nan=False)]
ConcentrationUgPerMl = Annotated[
    float, Field(gt=0, le=MAX_CONCENTRATION_UG_PER_ML, allow_inf_nan=False)
]


class PatientBolus(StrictModel):
    """Patient-activated bolus from the handheld: dose, duration, lockout and daily maximum."""

    dose_ug: BolusUg
    duration_min: DurationMin
    lockout_min: Annotated[float, Field(ge=0, le=MINUTES_PER_DAY, allow_inf_nan=False)]
    max_per_24h: Annotated[int, Field(ge=1, le=24), BeforeValidator(whole_number)]

    @model_validator(mode="after")
    def _lockout_covers_duration(self) -> PatientBolus:
        if self.lockout_min < self.duration_min:
            raise ValueError(
                f"lockout_min ({self.lockout_min:g}) must be at least duration_min "
                f"({self.duration_min:g}): allowed {self.duration_min:g} to {MINUTES_PER_DAY}"
            )
        return self


class FlexStep(StrictModel):
    """One step of a flex day: from ``start`` until the next step (or midnight), this dose rate."""

    start: TimeOfDay
    dose_ug_per_day: DoseUgPerDay


def _check_flex_steps(steps: list[FlexStep]) -> list[FlexStep]:
    minutes = [parse_hhmm(step.start) for step in steps]
    if minutes[0] != 0:
        raise ValueError(f"the first step must start at 00:00, got {steps[0].start}")
    for index in range(1, len(minutes)):
        if minutes[index] <= minutes[index - 1]:
            raise ValueError(
                f"step {index} starts at {steps[index].start}, not after step {index - 1} "
                f"({steps[index - 1].start}): steps must be in ascending time order without "
                "duplicates or overlaps"
            )
    return steps


FlexSchedule = Annotated[
    list[FlexStep],
    Field(min_length=1, max_length=MAX_FLEX_STEPS),
    AfterValidator(_check_flex_steps),
]


def _schedule(steps: list[FlexStep]) -> DaySchedule:
    return [(parse_hhmm(step.start), step.dose_ug_per_day) for step in steps]


class Catheter(StrictModel):
    """The catheter and pump tubing: their volume is what priming and bridge boluses push."""

    length_cm: Annotated[float, Field(gt=0, le=200, allow_inf_nan=False)]
    ul_per_cm: Annotated[float, Field(gt=0, le=50, allow_inf_nan=False)]
    pump_tubing_ul: Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]

    @property
    def volume_ul(self) -> float:
        """Catheter length × internal volume per cm + pump tubing volume."""
        return self.length_cm * self.ul_per_cm + self.pump_tubing_ul


class _Therapy(StrictModel):
    """Common behaviour of every mode: a basal day schedule and scheduled boluses."""

    def day_schedule(self, weekday: str) -> DaySchedule:
        """Basal schedule of a day (stopped: zero all day)."""
        return [(0, 0.0)]

    def bolus_starts_min(self) -> list[int]:
        """Scheduled (periodic) bolus start minutes of every day."""
        return []

    def scheduled_bolus_ug(self) -> float:
        """Dose of each scheduled bolus."""
        return 0.0

    def daily_total_ug(self, weekday: str) -> float:
        """Programmed dose of a whole day: basal schedule plus scheduled boluses."""
        boluses_ug = len(self.bolus_starts_min()) * self.scheduled_bolus_ug()
        return schedule_daily_total_ug(self.day_schedule(weekday)) + boluses_ug

    def max_daily_total_ug(self) -> float:
        """The largest programmed daily total over the week."""
        return max(self.daily_total_ug(day) for day in WEEKDAYS)


class StoppedTherapy(_Therapy):
    """No delivery."""

    mode: Literal["stopped"]


class ContinuousTherapy(_Therapy):
    """Simple continuous: the same daily dose all day, every day."""

    mode: Literal["continuous"]
    dose_ug_per_day: DoseUgPerDay
    patient_bolus: PatientBolus | None = None

    def day_schedule(self, weekday: str) -> DaySchedule:
        return [(0, self.dose_ug_per_day)]


class FlexTherapy(_Therapy):
    """Flex: up to 13 dose steps a day, optionally a different schedule on given weekdays."""

    mode: Literal["flex"]
    steps: FlexSchedule
    weekdays: dict[Weekday, FlexSchedule] = Field(default_factory=dict)
    patient_bolus: PatientBolus | None = None

    def day_schedule(self, weekday: str) -> DaySchedule:
        return _schedule(self.weekdays.get(weekday, self.steps))


class SingleBolusTherapy(_Therapy):
    """Single bolus: a dose over a duration, then the pump is stopped."""

    mode: Literal["single_bolus"]
    dose_ug: BolusUg
    duration_min: DurationMin


class PeriodicBolusTherapy(_Therapy):
    """Background daily dose plus boluses at set times of day or every N hours from ``first_at``."""

    mode: Literal["periodic_bolus"]
    background_dose_ug_per_day: Annotated[
        float, Field(ge=0, le=MAX_DOSE_UG_PER_DAY, allow_inf_nan=False)
    ]
    bolus_dose_ug: BolusUg
    bolus_duration_min: DurationMin
    times: Annotated[list[TimeOfDay], Field(min_length=1, max_length=48)] | None = None
    every_h: Annotated[Literal[1, 2, 3, 4, 6, 8, 12, 24], BeforeValidator(whole_number)] | None = (
        None
    )
    first_at: TimeOfDay = "00:00"
    patient_bolus: PatientBolus | None = None

    @model_validator(mode="after")
    def _schedule_is_consistent(self) -> PeriodicBolusTherapy:
        if (self.times is None) == (self.every_h is None):
            raise ValueError("give exactly one of times (list of HH:MM) or every_h (hours)")
        if self.times is not None and self.first_at != "00:00":
            raise ValueError("first_at only applies with every_h")
        starts = self.bolus_starts_min()
        if self.times is not None and starts != sorted(set(starts)):
            raise ValueError("times must be in ascending order without duplicates")
        for index, start in enumerate(starts):
            following = (
                starts[index + 1] if index + 1 < len(starts) else starts[0] + MINUTES_PER_DAY
            )
            if self.bolus_duration_min > following - start:
                raise ValueError(
                    f"bolus_duration_min ({self.bolus_duration_min:g}) overlaps the next bolus: "
                    f"allowed at most {following - start} min between boluses"
                )
        return self

    def day_schedule(self, weekday: str) -> DaySchedule:
        return [(0, self.background_dose_ug_per_day)]

    def bolus_starts_min(self) -> list[int]:
        if self.times is not None:
            return [parse_hhmm(text) for text in self.times]
        first = parse_hhmm(self.first_at) % (self.every_h * 60)
        return list(range(first, MINUTES_PER_DAY, self.every_h * 60))

    def scheduled_bolus_ug(self) -> float:
        return self.bolus_dose_ug


FollowingTherapy = Annotated[
    StoppedTherapy | ContinuousTherapy | FlexTherapy | SingleBolusTherapy | PeriodicBolusTherapy,
    Field(discriminator="mode"),
]
BasalTherapy = StoppedTherapy | ContinuousTherapy | FlexTherapy | PeriodicBolusTherapy


class _LeadInTherapy(_Therapy):
    """A one-shot volume before the program in ``then``, whose schedule it reports."""

    catheter: Catheter
    then: FollowingTherapy

    def day_schedule(self, weekday: str) -> DaySchedule:
        return self.then.day_schedule(weekday)

    def bolus_starts_min(self) -> list[int]:
        return self.then.bolus_starts_min()

    def scheduled_bolus_ug(self) -> float:
        return self.then.scheduled_bolus_ug()


class PrimingBolusTherapy(_LeadInTherapy):
    """Priming bolus: fills the empty catheter and tubing at the priming rate, then ``then``."""

    mode: Literal["priming_bolus"]
    rate_ul_per_h: Annotated[
        float,
        Field(
            ge=MIN_PRIMING_UL_PER_H,
            le=10_000,
            allow_inf_nan=False,
            description=f"at least {MIN_PRIMING_UL_PER_H:g} µL/h (slower, a drive step of "
            "0.036 µL comes minutes apart and a catheter takes weeks to fill); priming must "
            f"end within {MAX_PRIMING_H:g} h",
        ),
    ]

    @model_validator(mode="after")
    def _priming_ends_within_a_day(self) -> PrimingBolusTherapy:
        hours = self.catheter.volume_ul / self.rate_ul_per_h
        if hours > MAX_PRIMING_H:
            raise ValueError(
                f"priming {self.catheter.volume_ul:g} µL at {self.rate_ul_per_h:g} µL/h would "
                f"take {hours:.0f} h: allowed at most {MAX_PRIMING_H:g} h (a rate of at least "
                f"{self.catheter.volume_ul / MAX_PRIMING_H:.0f} µL/h for this catheter)"
            )
        return self


class BridgeBolusTherapy(_LeadInTherapy):
    """Bridge bolus: the catheter's old drug delivered at the old dose rate, then ``then``."""

    mode: Literal["bridge_bolus"]
    old_concentration_ug_per_ml: ConcentrationUgPerMl
    old_dose_ug_per_day: DoseUgPerDay


class _Drug(StrictModel):
    drug: Annotated[str, Field(min_length=1, max_length=64)] = "baclofen"
    concentration_ug_per_ml: ConcentrationUgPerMl


class StoppedProgram(StoppedTherapy, _Drug):
    """Program: pump stopped."""


class ContinuousProgram(ContinuousTherapy, _Drug):
    """Program: simple continuous."""


class FlexProgram(FlexTherapy, _Drug):
    """Program: flex day schedule."""


class SingleBolusProgram(SingleBolusTherapy, _Drug):
    """Program: single bolus, then stopped."""


class PeriodicBolusProgram(PeriodicBolusTherapy, _Drug):
    """Program: background rate plus periodic boluses."""


class PrimingBolusProgram(PrimingBolusTherapy, _Drug):
    """Program: priming bolus, then the following program."""


class BridgeBolusProgram(BridgeBolusTherapy, _Drug):
    """Program: bridge bolus after a concentration change, then the following program."""


AnyProgram = (
    StoppedProgram
    | ContinuousProgram
    | FlexProgram
    | SingleBolusProgram
    | PeriodicBolusProgram
    | PrimingBolusProgram
    | BridgeBolusProgram
)


class Program(RootModel[Annotated[AnyProgram, Field(discriminator="mode")]]):
    """A dose program of any mode (the top-level ``mode`` key chooses which)."""

    model_config = {"frozen": True}

    @property
    def mode(self) -> str:
        return self.root.mode

    @property
    def drug(self) -> str:
        return self.root.drug

    @property
    def concentration_ug_per_ml(self) -> float:
        return self.root.concentration_ug_per_ml

    @property
    def main_therapy(self) -> BasalTherapy | SingleBolusTherapy:
        """The therapy that runs after any priming or bridge bolus."""
        therapy = self.root
        if isinstance(therapy, PrimingBolusTherapy | BridgeBolusTherapy):
            return therapy.then
        return therapy

    @property
    def patient_bolus(self) -> PatientBolus | None:
        return getattr(self.main_therapy, "patient_bolus", None)

    def max_daily_total_ug(self) -> float:
        """Largest programmed daily total (µg/day) of the therapy that runs after any preamble."""
        return self.root.max_daily_total_ug()

    def daily_totals_ug(self) -> dict[str, float]:
        """Programmed daily total (µg) of each weekday."""
        return {day: self.root.daily_total_ug(day) for day in WEEKDAYS}
