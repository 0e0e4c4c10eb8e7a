"""Drug library and dose limits: which concentrations exist and which doses need confirmation.

Soft limits warn and need explicit confirmation; hard limits reject. The default library holds
baclofen; a library can be loaded from a TOML document with the same shape as
:data:`DEFAULT_LIBRARY_DATA` or overridden key by key with :meth:`DrugLibrary.updated`.

Library TOML::

    [drugs.baclofen]
    concentrations_ug_per_ml = [50, 500, 1000, 2000]
    daily_soft_limit_ug_per_day = 800
    daily_hard_limit_ug_per_day = 2000
    bolus_soft_limit_ug = 100
    bolus_hard_limit_ug = 200
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, model_validator

from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml
from rig.therapy.programs import (
    BolusUg,
    BridgeBolusTherapy,
    ConcentrationUgPerMl,
    DoseUgPerDay,
    FlexTherapy,
    PrimingBolusTherapy,
    Program,
    schedule_daily_total_ug,
)
from rig.therapy.reservoir import MAX_CAPACITY_ML
from rig.therapy.units import UL_PER_ML, volume_ul


class DrugEntry(StrictModel):
    """One drug: its concentrations and its daily and per-bolus limits."""

    concentrations_ug_per_ml: Annotated[list[ConcentrationUgPerMl], Field(min_length=1)]
    daily_soft_limit_ug_per_day: DoseUgPerDay
    daily_hard_limit_ug_per_day: DoseUgPerDay
    bolus_soft_limit_ug: BolusUg
    bolus_hard_limit_ug: BolusUg

    @model_validator(mode="after")
    def _soft_below_hard(self) -> DrugEntry:
        if self.daily_soft_limit_ug_per_day > self.daily_hard_limit_ug_per_day:
            raise ValueError("daily_soft_limit_ug_per_day must not exceed the daily hard limit")
        if self.bolus_soft_limit_ug > self.bolus_hard_limit_ug:
            raise ValueError("bolus_soft_limit_ug must not exceed bolus_hard_limit_ug")
        if len(set(self.concentrations_ug_per_ml)) != len(self.concentrations_ug_per_ml):
            raise ValueError("concentrations_ug_per_ml must not repeat a value")
        return self


class DrugLibrary(StrictModel):
    """Every drug the rig may be programmed with."""

    drugs: Annotated[dict[str, DrugEntry], Field(min_length=1)]

    def updated(self, data: dict, source: str = "drug library") -> DrugLibrary:
        """A new library with *data* (same shape as the TOML) merged over this one, key by key."""
        merged = self.model_dump()
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a table with a 'drugs' key")
        merged_drugs = merged["drugs"]
        for name, entry in (data.get("drugs") or {}).items():
            if isinstance(entry, dict) and name in merged_drugs:
                merged_drugs[name] = {**merged_drugs[name], **entry}
            else:
                merged_drugs[name] = entry
        extra = {key: value for key, value in data.items() if key != "drugs"}
        return parse_drug_library({**merged, **extra}, source)


def concentration_problem(drug: str, entry: DrugEntry, field: str, value: float) -> str | None:
    """What is wrong with *value* as a concentration of *drug*, or None."""
    allowed = entry.concentrations_ug_per_ml
    if value in allowed:
        return None
    return f"{field}: {value:g} µg/mL is not a concentration of {drug}; allowed: " + ", ".join(
        f"{c:g}" for c in allowed
    )


def check_fill(library: DrugLibrary, drug: str, concentration_ug_per_ml: float) -> None:
    """A reservoir is filled with a drug of the library at one of its concentrations."""
    entry = library.drugs.get(drug)
    if entry is None:
        raise InputError(
            f"drug: {drug!r} is not in the drug library; allowed: {', '.join(library.drugs)}"
        )
    problem = concentration_problem(drug, entry, "concentration_ug_per_ml", concentration_ug_per_ml)
    if problem:
        raise InputError(problem)


def parse_drug_library(data: object, source: str = "drug library") -> DrugLibrary:
    """Validate a drug-library document; raise :class:`InputError` naming every problem."""
    try:
        return DrugLibrary.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, source)) from None


def load_drug_library(path: Path | str) -> DrugLibrary:
    """Load a drug library from TOML."""
    return parse_drug_library(read_toml(path, "drug library"), str(path))


DEFAULT_LIBRARY_DATA: dict = {
    "drugs": {
        "baclofen": {
            "concentrations_ug_per_ml": [50.0, 500.0, 1000.0, 2000.0],
            "daily_soft_limit_ug_per_day": 800.0,
            "daily_hard_limit_ug_per_day": 2000.0,
            "bolus_soft_limit_ug": 100.0,
            "bolus_hard_limit_ug": 200.0,
        }
    }
}
DEFAULT_DRUG_LIBRARY = parse_drug_library(copy.deepcopy(DEFAULT_LIBRARY_DATA), "default library")


class LimitWarning(StrictModel):
    """A soft-limit warning: the change needs explicit confirmation."""

    code: str
    field: str
    message: str


def check_program(
    program: Program,
    library: DrugLibrary = DEFAULT_DRUG_LIBRARY,
    *,
    capacity_ml: float = MAX_CAPACITY_ML,
    volume_ml: float | None = None,
    source: str = "program",
) -> list[LimitWarning]:
    """Check a program against the drug library, its limits and the reservoir.

    Every bolus must fit the reservoir capacity; one-shot deliveries (single, priming and bridge
    boluses) must also fit the volume in the reservoir now (*volume_ml*, when given). Hard
    problems raise :class:`InputError` (one line per problem); soft-limit warnings are returned.
    """
    entry = library.drugs.get(program.drug)
    if entry is None:
        raise InputError(
            f"{source}: drug: unknown drug {program.drug!r}; allowed: {', '.join(library.drugs)}"
        )
    checker = _Checker(program.drug, entry, capacity_ml, volume_ml)
    root = program.root
    checker.concentration("concentration_ug_per_ml", root.concentration_ug_per_ml)
    therapy = root
    prefix = ""
    if isinstance(root, BridgeBolusTherapy):
        checker.concentration("old_concentration_ug_per_ml", root.old_concentration_ug_per_ml)
        checker.daily("old_dose_ug_per_day", root.old_dose_ug_per_day)
    if isinstance(root, PrimingBolusTherapy | BridgeBolusTherapy):
        checker.volume("catheter", root.catheter.volume_ul, one_shot=True)
        therapy = root.then
        prefix = "then."
    conc = root.concentration_ug_per_ml
    if isinstance(therapy, FlexTherapy):
        checker.daily(f"{prefix}steps", schedule_daily_total_ug(therapy.day_schedule("")))
        for day in therapy.weekdays:
            checker.daily(
                f"{prefix}weekdays.{day}", schedule_daily_total_ug(therapy.day_schedule(day))
            )
    elif therapy.mode == "continuous":
        checker.daily(f"{prefix}dose_ug_per_day", therapy.max_daily_total_ug())
    elif therapy.mode == "periodic_bolus":
        checker.daily(f"{prefix}(daily total)", therapy.max_daily_total_ug())
        checker.bolus(f"{prefix}bolus_dose_ug", therapy.bolus_dose_ug, conc)
    elif therapy.mode == "single_bolus":
        checker.bolus(f"{prefix}dose_ug", therapy.dose_ug, conc, one_shot=True)
    patient = program.patient_bolus
    if patient is not None:
        checker.bolus(f"{prefix}patient_bolus.dose_ug", patient.dose_ug, conc)
        checker.patient_worst_case(
            f"{prefix}patient_bolus",
            program.max_daily_total_ug(),
            patient.dose_ug,
            patient.max_per_24h,
        )
    if checker.problems:
        raise InputError("\n".join(f"{source}: {line}" for line in checker.problems))
    return checker.warnings


class _Checker:
    """Collects hard problems and soft warnings for one program."""

    def __init__(
        self, drug: str, entry: DrugEntry, capacity_ml: float, volume_ml: float | None
    ) -> None:
        self.drug = drug
        self.entry = entry
        self.capacity_ml = capacity_ml
        self.volume_ml = volume_ml
        self.problems: list[str] = []
        self.warnings: list[LimitWarning] = []

    def concentration(self, field: str, value: float) -> None:
        problem = concentration_problem(self.drug, self.entry, field, value)
        if problem:
            self.problems.append(problem)

    def daily(self, field: str, total_ug: float) -> None:
        soft = self.entry.daily_soft_limit_ug_per_day
        hard = self.entry.daily_hard_limit_ug_per_day
        if total_ug > hard:
            self.problems.append(
                f"{field}: daily dose {total_ug:g} µg/day is above the hard limit; allowed up to "
                f"{hard:g} µg/day"
            )
        elif total_ug > soft:
            self.warnings.append(
                LimitWarning(
                    code="daily_soft_limit",
                    field=field,
                    message=f"daily dose {total_ug:g} µg/day is above the soft limit of "
                    f"{soft:g} µg/day",
                )
            )

    def bolus(
        self, field: str, bolus_ug: float, concentration_ug_per_ml: float, one_shot: bool = False
    ) -> None:
        soft = self.entry.bolus_soft_limit_ug
        hard = self.entry.bolus_hard_limit_ug
        if bolus_ug > hard:
            self.problems.append(
                f"{field}: bolus {bolus_ug:g} µg is above the hard limit; allowed up to {hard:g} µg"
            )
        elif bolus_ug > soft:
            self.warnings.append(
                LimitWarning(
                    code="bolus_soft_limit",
                    field=field,
                    message=f"bolus {bolus_ug:g} µg is above the soft limit of {soft:g} µg",
                )
            )
        self.volume(field, volume_ul(bolus_ug, concentration_ug_per_ml), one_shot)

    def volume(self, field: str, bolus_volume_ul: float, one_shot: bool = False) -> None:
        limit_ml, what = self.capacity_ml, "reservoir capacity"
        if one_shot and self.volume_ml is not None and self.volume_ml < limit_ml:
            limit_ml, what = self.volume_ml, "volume in the reservoir"
        if bolus_volume_ul > limit_ml * UL_PER_ML:
            self.problems.append(
                f"{field}: bolus volume {bolus_volume_ul / UL_PER_ML:g} mL is larger than the "
                f"{what}; allowed up to {limit_ml:g} mL"
            )

    def patient_worst_case(
        self, field: str, daily_total_ug: float, dose_ug: float, max_per_24h: int
    ) -> None:
        worst_ug = daily_total_ug + dose_ug * max_per_24h
        hard = self.entry.daily_hard_limit_ug_per_day
        soft = self.entry.daily_soft_limit_ug_per_day
        if worst_ug > hard:
            self.warnings.append(
                LimitWarning(
                    code="patient_bolus_hard_limit",
                    field=field,
                    message=f"with every patient bolus taken the daily dose would be "
                    f"{worst_ug:g} µg/day, above the hard limit of {hard:g} µg/day: boluses "
                    "that would pass it will be refused",
                )
            )
        elif worst_ug > soft:
            self.warnings.append(
                LimitWarning(
                    code="patient_bolus_soft_limit",
                    field=field,
                    message=f"with every patient bolus taken the daily dose would be "
                    f"{worst_ug:g} µg/day, above the soft limit of {soft:g} µg/day",
                )
            )


def parse_program(
    data: object, source: str = "program", library: DrugLibrary | None = None
) -> Program:
    """Validate a parsed program document: schema first, then drug library and limits.

    Raises :class:`InputError` with one line per problem. Soft-limit warnings are not errors here;
    :meth:`rig.therapy.engine.TherapyEngine.propose` reports them.
    """
    try:
        program = Program.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, source)) from None
    check_program(program, library or DEFAULT_DRUG_LIBRARY, source=source)
    return program


def load_program(path: Path | str, library: DrugLibrary | None = None) -> Program:
    """Load and validate a program file (TOML)."""
    return parse_program(read_toml(path, "program file"), str(path), library)
