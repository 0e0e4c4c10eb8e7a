"""Patient-bolus (PCA) accuracy: N boluses of a programmed volume weighed one by one; the mean
and standard deviation of the delivered volume against the programmed."""

from __future__ import annotations

import statistics
from typing import Annotated

from pydantic import Field

from calibration.bench import CalibrationBench
from calibration.models import NonNegativeFloat, Params, Result, Row
from rig.therapy.units import UL_PER_ML


class BolusParams(Params):
    count: Annotated[int, Field(ge=2, le=50)] = 5
    """Number of boluses."""
    volume_ul: Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)] = 50.0
    """Programmed volume of each bolus (µL)."""
    rate_ul_per_min: Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)] = 500.0
    """Bolus rate (µL/min)."""
    settle_s: NonNegativeFloat = 20.0
    """Wait after each bolus before weighing (the line relaxes)."""
    lockout_s: NonNegativeFloat = 10.0
    """Pause between boluses."""


class BolusPoint(Row):
    number: int
    steps: int
    delivered_ul: float
    error_pct: float


class BolusResult(Result):
    volume_ul: float
    mean_ul: float
    sd_ul: float
    mean_error_pct: float
    points: list[BolusPoint]


def planned_s(params: BolusParams, _ul_per_step: float = 0.0) -> float:
    moving_s = params.volume_ul / params.rate_ul_per_min * 60.0
    return params.count * (moving_s + params.settle_s + params.lockout_s)


def run_bolus(cb: CalibrationBench, params: BolusParams) -> BolusResult:
    """Run the bolus-accuracy test on *cb*; the bench is left stopped."""
    cb.require_volume(params.count * params.volume_ul, "the bolus test")
    cb.begin(planned_s(params))
    temperature_c, density = cb.water(params.temperature_c)
    steps = round(params.volume_ul / cb.ul_per_step)
    points = []
    before_g = cb.stable_mass_g()
    for number in range(1, params.count + 1):
        cb.move(steps, params.rate_ul_per_min)
        cb.wait(params.settle_s)
        after_g = cb.stable_mass_g()
        delivered = (after_g - before_g) / density * UL_PER_ML
        point = BolusPoint(
            number=number,
            steps=steps,
            delivered_ul=delivered,
            error_pct=100.0 * (delivered - params.volume_ul) / params.volume_ul,
        )
        points.append(point)
        cb.report(f"bolus {number} of {params.count} weighed", point.model_dump())
        before_g = after_g
        cb.wait(params.lockout_s)
    delivered = [p.delivered_ul for p in points]
    mean = statistics.fmean(delivered)
    return BolusResult(
        procedure="bolus",
        **cb.result_fields(temperature_c, density),
        volume_ul=params.volume_ul,
        mean_ul=mean,
        sd_ul=statistics.stdev(delivered),
        mean_error_pct=100.0 * (mean - params.volume_ul) / params.volume_ul,
        points=points,
    )
