"""Parameters and results shared by the procedures: strict models, JSON in and out."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Temperature = Annotated[float, Field(ge=0, le=40, allow_inf_nan=False)]


class Params(BaseModel):
    """Base of every procedure's parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    temperature_c: Temperature | None = None
    """Water temperature entered by the engineer (None: the flow sensor's reading)."""


class Row(BaseModel):
    """One row of a result's table (a weighed point, a sample, a rate)."""

    model_config = ConfigDict(extra="forbid")


class Result(BaseModel):
    """Base of every procedure's result."""

    model_config = ConfigDict(extra="forbid")

    procedure: str
    ul_per_step_nominal: float
    """µL per microstep from the nominal syringe and drive geometry."""
    ul_per_step_in_force: float
    """µL per microstep the run converted volumes and rates with (the calibration in force)."""
    temperature_c: float
    density_g_per_ml: float
    bench_s: float
    """Bench seconds the run took."""
