"""Keypad forms: which values each wizard step asks for, and the JSON they become."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One value entered on the keypad."""

    key: str
    label: str
    unit: str
    max_decimals: int = 1
    default: float | None = None


DRUG = "baclofen"

CONCENTRATION = Field("concentration_ug_per_ml", "Concentration", "µg/mL", 0)
DAILY_DOSE = Field("dose_ug_per_day", "Daily dose", "µg/day", 1)
SINGLE_BOLUS_FIELDS = (
    Field("dose_ug", "Bolus dose", "µg", 1, 50),
    Field("duration_min", "Duration", "min", 0, 60),
)
PROGRAM_FIELDS: dict[str, tuple[Field, ...]] = {
    "continuous": (CONCENTRATION, DAILY_DOSE),
    "single_bolus": (CONCENTRATION, *SINGLE_BOLUS_FIELDS),
    "stopped": (CONCENTRATION,),
}
PROGRAM_MODES = tuple(PROGRAM_FIELDS)

CATHETER_FIELDS = (
    Field("length_cm", "Catheter length", "cm", 1, 50),
    Field("ul_per_cm", "Catheter volume", "µL/cm", 2, 2.2),
    Field("pump_tubing_ul", "Pump tubing", "µL", 0, 20),
)
OLD_CONCENTRATION = Field("old_concentration_ug_per_ml", "Old concentration", "µg/mL", 0)
OLD_DOSE = Field("old_dose_ug_per_day", "Daily dose", "µg/day", 1)
NEW_CONCENTRATION = Field("concentration_ug_per_ml", "New concentration", "µg/mL", 0)
BOLUS_FIELDS: dict[str, tuple[Field, ...]] = {
    "single": SINGLE_BOLUS_FIELDS,
    "priming": (
        *CATHETER_FIELDS,
        Field("rate_ul_per_h", "Priming rate", "µL/h", 0, 1000),
        Field("dose_ug_per_day", "Then daily dose", "µg/day", 1),
    ),
    "bridge": (*CATHETER_FIELDS, OLD_CONCENTRATION, OLD_DOSE, NEW_CONCENTRATION),
}
BOLUS_KINDS = tuple(BOLUS_FIELDS)

WITHDRAWN_FIELDS = (Field("withdrawn_ml", "Withdrawn volume", "mL", 2),)
FILL_FIELDS = (
    Field("volume_ml", "Fill volume", "mL", 1, 20),
    Field("concentration_ug_per_ml", "Concentration", "µg/mL", 0),
)
FAULT_FRACTIONS = (
    ("occlusion_fraction", "Occlusion"),
    ("leak_fraction", "Leak"),
    ("slip_fraction", "Drive slip"),
)
FAULT_SWITCHES = (
    ("motor_stalled", "Motor stall"),
    ("sensor_dropout", "Sensor dropout"),
)
AIR_BUBBLE_UL = 20.0


def missing(fields: tuple[Field, ...], values: dict[str, float | None]) -> list[str]:
    """Labels of the fields still empty."""
    return [field.label for field in fields if values.get(field.key) is None]


def program_payload(mode: str, values: dict[str, float | None]) -> dict[str, Any]:
    """The program JSON of a wizard entry (validated by the service, not here)."""
    program: dict[str, Any] = {"mode": mode, "drug": DRUG}
    for field in PROGRAM_FIELDS[mode]:
        program[field.key] = values.get(field.key)
    return program


def bolus_program(
    kind: str, values: dict[str, float | None], current: dict[str, Any] | None
) -> dict[str, Any]:
    """The program of a bolus: single, or priming/bridge followed by continuous delivery.

    *current* is the running program (drug, concentration, daily dose): a single or priming bolus
    uses its concentration; a bridge bolus pushes the old drug out at the old daily dose and then
    continues that daily dose at the new concentration.
    """
    current = current or {}
    program: dict[str, Any] = {
        "mode": f"{kind}_bolus",
        "drug": current.get("drug") or DRUG,
        "concentration_ug_per_ml": current.get("concentration_ug_per_ml"),
    }
    if kind == "single":
        program.update({f.key: values.get(f.key) for f in SINGLE_BOLUS_FIELDS})
        return program
    program["catheter"] = {f.key: values.get(f.key) for f in CATHETER_FIELDS}
    if kind == "priming":
        program["rate_ul_per_h"] = values.get("rate_ul_per_h")
        program["then"] = {"mode": "continuous", "dose_ug_per_day": values.get("dose_ug_per_day")}
    else:
        for field in (OLD_CONCENTRATION, OLD_DOSE, NEW_CONCENTRATION):
            program[field.key] = values.get(field.key)
        program["then"] = {"mode": "continuous", "dose_ug_per_day": values.get(OLD_DOSE.key)}
    return program


def initial_values(
    fields: tuple[Field, ...], current: dict[str, Any] | None = None
) -> dict[str, float | None]:
    """Start values of a form: the current setting where there is one, else the field default."""
    current = current or {}
    values: dict[str, float | None] = {}
    for field in fields:
        value = current.get(field.key, field.default)
        values[field.key] = float(value) if isinstance(value, int | float) else None
    return values
