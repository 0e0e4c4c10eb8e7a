"""Flow-sensor calibration against the balance: zero offset with the pump stopped, then a
straight line Q_ref = scale · Q_sensor + offset over several rates, the temperature logged.

At patient rates neither the sensor (0.1 µL/min per LSB) nor a 0.1 mg balance resolves the flow:
calibrate at bench rates. The rig applies the result to every reading the flow monitor judges.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from calibration.analysis import fit_line
from calibration.bench import CalibrationBench
from calibration.models import NonNegativeFloat, Params, PositiveFloat, Result, Row
from calibration.rate import Rate
from rig.therapy.units import UL_PER_ML


class FlowSensorParams(Params):
    rates_ul_per_min: Annotated[list[Rate], Field(min_length=3, max_length=20)] = Field(
        default_factory=lambda: [100.0, 200.0, 400.0]
    )
    """Rates of the fit (µL/min, at least three)."""
    zero_s: PositiveFloat = 30.0
    """Pump stopped: the sensor's zero offset is its mean over this time."""
    settle_min: NonNegativeFloat = 1.0
    """Run at each rate this long before the window."""
    window_min: PositiveFloat = 2.0
    """Window over which balance and sensor are averaged."""


class SensorPoint(Row):
    rate_ul_per_min: float
    reference_ul_per_min: float
    sensor_ul_per_min: float
    temperature_c: float
    residual_ul_per_min: float = 0.0


class FlowSensorResult(Result):
    zero_offset_ul_per_min: float
    scale: float
    """Q_ref = scale · Q_sensor + offset_ul_per_min."""
    scale_u95: float
    offset_ul_per_min: float
    points: list[SensorPoint]


def planned_s(params: FlowSensorParams, _ul_per_step: float = 0.0) -> float:
    per_rate_s = (params.settle_min + params.window_min) * 60.0
    return params.zero_s + len(params.rates_ul_per_min) * per_rate_s


def run_flow_sensor(cb: CalibrationBench, params: FlowSensorParams) -> FlowSensorResult:
    """Run the flow-sensor calibration on *cb*; the bench is left stopped."""
    minutes = params.settle_min + params.window_min
    cb.require_volume(sum(params.rates_ul_per_min) * minutes, "the flow-sensor calibration")
    cb.begin(planned_s(params))
    temperature_c, density = cb.water(params.temperature_c)
    cb.stop()
    cb.report("zero offset, pump stopped")
    zero = cb.mean_sensor_flow_ul_per_min(params.zero_s)
    points = []
    try:
        for rate in params.rates_ul_per_min:
            cb.report(f"settling at {rate:g} µL/min")
            cb.run_at(rate)
            cb.wait(params.settle_min * 60.0)
            before_g = cb.mass_g()
            sensor = cb.mean_sensor_flow_ul_per_min(params.window_min * 60.0)
            after_g = cb.mass_g()
            reference = (after_g - before_g) / density * UL_PER_ML / params.window_min
            point = SensorPoint(
                rate_ul_per_min=rate,
                reference_ul_per_min=reference,
                sensor_ul_per_min=sensor,
                temperature_c=cb.water_temperature_c(),
            )
            points.append(point)
            cb.report(f"{rate:g} µL/min compared", point.model_dump())
    finally:
        cb.stop()
    fit = fit_line([p.sensor_ul_per_min for p in points], [p.reference_ul_per_min for p in points])
    for point, residual in zip(points, fit.residuals, strict=True):
        point.residual_ul_per_min = residual
    return FlowSensorResult(
        procedure="flow-sensor",
        **cb.result_fields(temperature_c, density),
        zero_offset_ul_per_min=zero,
        scale=fit.slope,
        scale_u95=fit.slope_u95,
        offset_ul_per_min=fit.intercept,
        points=points,
    )
