"""Gravimetric volume calibration: µL per microstep from known step counts weighed on the balance.

Tare, weigh a pump-stopped evaporation blank, then dispense to several cumulative step counts
without a pause in direction, weighing each once the line has relaxed. Masses become volumes with
the water density at the measured or entered temperature, less the evaporation since the tare.
A straight line with an intercept is fitted: the slope is µL per step, the intercept what the
first steps did not deliver (backlash, line take-up).
"""

from __future__ import annotations

import itertools
from typing import Annotated

from pydantic import Field, field_validator

from calibration.analysis import fit_line
from calibration.bench import CalibrationBench, CalibrationError
from calibration.models import NonNegativeFloat, Params, PositiveFloat, Result, Row
from rig.therapy.units import UL_PER_ML


class VolumeParams(Params):
    volumes_ul: Annotated[list[PositiveFloat], Field(min_length=3, max_length=30)] = Field(
        default_factory=lambda: [50.0, 100.0, 200.0, 400.0, 800.0]
    )
    """Cumulative volumes (µL, by the µL per step in force) at which the beaker is weighed."""
    rate_ul_per_min: Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)] = 200.0
    """Dispensing rate (µL/min)."""
    settle_s: NonNegativeFloat = 20.0
    """Wait after each move before weighing (the line relaxes with τ = C·R)."""
    prime_ul: NonNegativeFloat = 50.0
    """Dispensed before the tare: takes up backlash and wets the beaker (0: none, and the
    intercept then holds the backlash)."""
    blank_s: NonNegativeFloat = 60.0
    """Pump-stopped evaporation blank before dispensing (0: none)."""

    @field_validator("volumes_ul")
    @classmethod
    def _increasing(cls, volumes_ul: list[float]) -> list[float]:
        if any(b <= a for a, b in itertools.pairwise(volumes_ul)):
            raise ValueError("volumes_ul must be strictly increasing (cumulative volumes)")
        return volumes_ul


class VolumePoint(Row):
    steps: int
    mass_g: float
    volume_ul: float
    residual_ul: float


class VolumeResult(Result):
    ul_per_step_measured: float
    coefficient: float
    """Measured over nominal µL per step."""
    ul_per_step_u95: float
    """95 % expanded uncertainty of the measured µL per step (Student's t, n − 2)."""
    coefficient_u95: float
    intercept_ul: float
    intercept_u95_ul: float
    residuals_ul: list[float]
    evaporation_mg_per_h: float
    points: list[VolumePoint]


def planned_s(params: VolumeParams, ul_per_step: float) -> float:
    moving_s = params.volumes_ul[-1] / params.rate_ul_per_min * 60.0
    moving_s += params.prime_ul / params.rate_ul_per_min * 60.0
    return params.blank_s + moving_s + params.settle_s * len(params.volumes_ul)


def run_volume(cb: CalibrationBench, params: VolumeParams) -> VolumeResult:
    """Run the volume calibration on *cb*; the bench is left stopped."""
    cb.require_volume(params.prime_ul + params.volumes_ul[-1], "the volume calibration")
    cb.begin(planned_s(params, cb.ul_per_step))
    temperature_c, density = cb.water(params.temperature_c)
    if params.prime_ul > 0:
        cb.report("priming")
        cb.move(round(params.prime_ul / cb.ul_per_step), params.rate_ul_per_min)
        cb.wait(params.settle_s)
    cb.tare()
    tare_s = cb.now_s()
    start_g = cb.stable_mass_g()
    evaporation_g_per_s = 0.0
    if params.blank_s > 0:
        cb.report("evaporation blank")
        cb.wait(params.blank_s)
        evaporation_g_per_s = (cb.stable_mass_g() - start_g) / params.blank_s
    steps_total = 0
    measured: list[tuple[int, float, float]] = []
    for volume_ul in params.volumes_ul:
        target_steps = round(volume_ul / cb.ul_per_step)
        cb.report(f"dispensing to {volume_ul:g} µL")
        cb.move(target_steps - steps_total, params.rate_ul_per_min)
        steps_total = target_steps
        cb.wait(params.settle_s)
        mass_g = cb.stable_mass_g()
        corrected_g = mass_g - start_g - evaporation_g_per_s * (cb.now_s() - tare_s)
        measured.append((steps_total, mass_g, corrected_g / density * UL_PER_ML))
        cb.report(f"{volume_ul:g} µL weighed", {"steps": steps_total, "mass_g": mass_g})
    if measured[-1][2] <= 0:
        raise CalibrationError("the balance saw no water arrive: check the line reaches the beaker")
    fit = fit_line([p[0] for p in measured], [p[2] for p in measured])
    nominal = cb.bench.config.ul_per_microstep
    return VolumeResult(
        procedure="volume",
        ul_per_step_nominal=nominal,
        ul_per_step_in_force=cb.ul_per_step,
        ul_per_step_measured=fit.slope,
        coefficient=fit.slope / nominal,
        ul_per_step_u95=fit.slope_u95,
        coefficient_u95=fit.slope_u95 / nominal,
        intercept_ul=fit.intercept,
        intercept_u95_ul=fit.intercept_u95,
        residuals_ul=list(fit.residuals),
        evaporation_mg_per_h=-evaporation_g_per_s * 3.6e6,
        temperature_c=temperature_c,
        density_g_per_ml=density,
        bench_s=cb.elapsed_s(),
        points=[
            VolumePoint(steps=s, mass_g=m, volume_ul=v, residual_ul=r)
            for (s, m, v), r in zip(measured, fit.residuals, strict=True)
        ],
    )
