"""Rate calibration: mean flow against set flow over a steady window at several bench rates.

Volume per step can be right while the rate is not: stick-slip at low plunger speeds loses steps.
At each rate the pump runs, settles, and the balance weighs what arrives over the window. The
result shows the rate-dependent error and, where any exceeds the tolerance, a correction factor
per rate (set over measured) to interpolate between.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from calibration.bench import CalibrationBench
from calibration.models import NonNegativeFloat, Params, PositiveFloat, Result, Row
from rig.therapy.units import UL_PER_ML

Rate = Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)]


class RateParams(Params):
    rates_ul_per_min: Annotated[list[Rate], Field(min_length=1, max_length=20)] = Field(
        default_factory=lambda: [10.0, 30.0, 100.0, 300.0]
    )
    """Set rates to check (µL/min)."""
    settle_min: NonNegativeFloat = 2.0
    """Run at each rate this long before the window (start-up, line take-up)."""
    window_min: PositiveFloat = 5.0
    """Steady window over which the mean flow is weighed."""
    tolerance_pct: PositiveFloat = 2.0
    """A correction is stored when any rate's error exceeds this."""


class RatePoint(Row):
    rate_ul_per_min: float
    measured_ul_per_min: float
    error_pct: float
    factor: float
    """Set over measured: multiply the set rate by this to get the rate asked for."""
    sensor_ul_per_min: float


class RateResult(Result):
    points: list[RatePoint]
    correction_needed: bool
    tolerance_pct: float


def planned_s(params: RateParams, _ul_per_step: float = 0.0) -> float:
    return len(params.rates_ul_per_min) * (params.settle_min + params.window_min) * 60.0


def run_rate(cb: CalibrationBench, params: RateParams) -> RateResult:
    """Run the rate calibration on *cb*; the bench is left stopped."""
    minutes = params.settle_min + params.window_min
    cb.require_volume(sum(params.rates_ul_per_min) * minutes, "the rate calibration")
    cb.begin(planned_s(params))
    temperature_c, density = cb.water(params.temperature_c)
    points = []
    try:
        for rate in params.rates_ul_per_min:
            cb.report(f"settling at {rate:g} µL/min")
            cb.run_at(rate)
            cb.wait(params.settle_min * 60.0)
            before_g = cb.mass_g()
            sensor = cb.mean_sensor_flow_ul_per_min(params.window_min * 60.0)
            after_g = cb.mass_g()
            cb.check_not_empty()
            measured = (after_g - before_g) / density * UL_PER_ML / params.window_min
            point = RatePoint(
                rate_ul_per_min=rate,
                measured_ul_per_min=measured,
                error_pct=100.0 * (measured - rate) / rate,
                factor=rate / measured if measured > 0 else float("nan"),
                sensor_ul_per_min=sensor,
            )
            points.append(point)
            cb.report(f"{rate:g} µL/min weighed", point.model_dump())
    finally:
        cb.stop()
    return RateResult(
        procedure="rate",
        **cb.result_fields(temperature_c, density),
        points=points,
        correction_needed=any(abs(p.error_pct) > params.tolerance_pct for p in points),
        tolerance_pct=params.tolerance_pct,
    )
