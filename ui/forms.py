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
    max_digits: int = 7
    time_of_day: bool = False
    """Typed as HHMM on the keypad (``0630``), shown as ``06:30``."""

    def shown(self, value: float | None) -> str:
        """The value as the field's button shows it (a dash when empty)."""
        if value is None:
            return "—"
        if self.time_of_day:
            hours, minutes = divmod(round(value), 100)
            return f"{hours:02d}:{minutes:02d}"
        return f"{value:g}"


DRUG = "baclofen"

CONCENTRATION = Field("concentration_ug_per_ml", "Concentration", "µg/mL", 0)
DAILY_DOSE = Field("dose_ug_per_day", "Daily dose", "µg/day", 1)
SINGLE_BOLUS_FIELDS = (
    Field("dose_ug", "Bolus dose", "µg", 1, 50),
    Field("duration_min", "Duration", "min", 0, 60),
)
CATHETER_FIELDS = (
    Field("length_cm", "Catheter length", "cm", 1, 45),
    Field("ul_per_cm", "Catheter volume", "µL/cm", 2, 2.2),
    Field("pump_tubing_ul", "Pump tubing", "µL", 0, 60),
)
BOLUS_FIELDS: dict[str, tuple[Field, ...]] = {"single": SINGLE_BOLUS_FIELDS}

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


def bolus_program(
    kind: str, values: dict[str, float | None], current: dict[str, Any] | None
) -> dict[str, Any]:
    """The program of a single bolus at the concentration of the program in force (*current*).

    Priming and bridge boluses are built by the Program wizard (:mod:`ui.wizard`).
    """
    current = current or {}
    program: dict[str, Any] = {
        "mode": f"{kind}_bolus",
        "drug": current.get("drug") or DRUG,
        "concentration_ug_per_ml": current.get("concentration_ug_per_ml"),
    }
    program.update({f.key: values.get(f.key) for f in BOLUS_FIELDS[kind]})
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
