"""IEC 60601-2-24 gravimetric flow accuracy: start-up curve, mean error A and trumpet curve.

Pump at the set rate into the beaker and read the balance every S for T. Flows come from mass
differences; the start-up curve is Q_i over the first T1; over the rest (T2) the mean error A and,
for each observation window P, Ep(max) and Ep(min) of the moving-window mean percentage error.
The formulas follow the commonly reproduced form of the standard (see
:mod:`calibration.analysis`); this is no compliance claim.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from calibration.analysis import flows_ul_per_min, trumpet
from calibration.bench import CalibrationBench
from calibration.models import NonNegativeFloat, Params, PositiveFloat, Result, Row

IEC_WINDOWS_MIN = (2.0, 5.0, 11.0, 19.0, 31.0)
BLANK_SETTLE_S = 10.0
"""After the pump stops, the line drains (τ = C·R, under a second) before the blank starts."""


class AccuracyParams(Params):
    rate_ul_per_min: Annotated[float, Field(gt=0, le=5000, allow_inf_nan=False)]
    """r: the set rate (µL/min)."""
    sample_min: PositiveFloat = 0.5
    """S: minutes between balance readings."""
    duration_min: PositiveFloat = 120.0
    """T: the whole run."""
    startup_min: NonNegativeFloat = 60.0
    """T1: the start-up period; the analysis period T2 is the rest."""
    windows_min: Annotated[list[PositiveFloat], Field(min_length=1, max_length=20)] = Field(
        default_factory=lambda: list(IEC_WINDOWS_MIN)
    )
    """Observation windows P (min), each a whole number of samples."""
    blank_min: NonNegativeFloat = 2.0
    """Pump-stopped blank after the run, when the beaker holds water: its evaporation (and the
    balance's drift) is added back to every reading (0: none, as under an oil film)."""

    @model_validator(mode="after")
    def _fits(self) -> AccuracyParams:
        for name, minutes in (
            ("duration_min", self.duration_min),
            ("startup_min", self.startup_min),
        ):
            if abs(minutes / self.sample_min - round(minutes / self.sample_min)) > 1e-9:
                raise ValueError(
                    f"{name} ({minutes:g}) must be a whole number of samples of "
                    f"{self.sample_min:g} min"
                )
        analysis_min = self.duration_min - self.startup_min
        if analysis_min < max(self.windows_min):
            raise ValueError(
                f"the analysis period (duration_min − startup_min = {analysis_min:g} min) must "
                f"be at least the longest window ({max(self.windows_min):g} min)"
            )
        return self


class MassSample(Row):
    t_min: float
    mass_g: float


class FlowPoint(Row):
    t_min: float
    flow_ul_per_min: float


class Window(Row):
    window_min: float
    ep_max_pct: float
    ep_min_pct: float


class AccuracyResult(Result):
    rate_ul_per_min: float
    sample_min: float
    duration_min: float
    startup_min: float
    mean_flow_ul_per_min: float
    mean_error_pct: float
    """A over the analysis period."""
    windows: list[Window]
    samples: list[MassSample]
    """Raw balance readings (g) from the start of pumping."""
    flows: list[FlowPoint]
    """Q_i at the end of each sample interval; those up to startup_min are the start-up curve."""
    evaporation_mg_per_h: float


def planned_s(params: AccuracyParams) -> float:
    blank_s = params.blank_min * 60.0 + BLANK_SETTLE_S if params.blank_min > 0 else 0.0
    return params.duration_min * 60.0 + blank_s


def run_accuracy(cb: CalibrationBench, params: AccuracyParams) -> AccuracyResult:
    """Run the accuracy test on *cb*; the bench is left stopped."""
    cb.require_volume(params.rate_ul_per_min * params.duration_min, "the accuracy test")
    cb.begin(planned_s(params))
    temperature_c, density = cb.water(params.temperature_c)
    cb.tare()
    count = round(params.duration_min / params.sample_min)
    start_s = cb.now_s()
    samples = [MassSample(t_min=0.0, mass_g=cb.mass_g())]
    cb.run_at(params.rate_ul_per_min)
    cb.report("pumping", samples[0].model_dump())
    try:
        for i in range(1, count + 1):
            cb.wait(start_s + i * params.sample_min * 60.0 - cb.now_s())
            sample = MassSample(t_min=i * params.sample_min, mass_g=cb.mass_g())
            cb.check_not_empty()
            samples.append(sample)
            cb.report(f"sample {i} of {count}", sample.model_dump())
    finally:
        cb.stop()
    evaporation_g_per_min = 0.0
    if params.blank_min > 0:
        cb.report("evaporation blank, pump stopped")
        cb.wait(BLANK_SETTLE_S)
        before_g = cb.stable_mass_g()
        cb.wait(params.blank_min * 60.0)
        evaporation_g_per_min = (cb.stable_mass_g() - before_g) / params.blank_min
    corrected_g = [s.mass_g - evaporation_g_per_min * s.t_min for s in samples]
    flows = flows_ul_per_min(corrected_g, params.sample_min, density)
    first = round(params.startup_min / params.sample_min)
    analysis = trumpet(
        corrected_g[first:],
        rate_ul_per_min=params.rate_ul_per_min,
        sample_min=params.sample_min,
        density_g_per_ml=density,
        windows_min=params.windows_min,
    )
    return AccuracyResult(
        procedure="accuracy",
        **cb.result_fields(temperature_c, density),
        rate_ul_per_min=params.rate_ul_per_min,
        sample_min=params.sample_min,
        duration_min=params.duration_min,
        startup_min=params.startup_min,
        mean_flow_ul_per_min=analysis.mean_flow_ul_per_min,
        mean_error_pct=analysis.mean_error_pct,
        windows=[
            Window(window_min=w.window_min, ep_max_pct=w.ep_max_pct, ep_min_pct=w.ep_min_pct)
            for w in analysis.windows
        ],
        samples=samples,
        flows=[
            FlowPoint(t_min=(i + 1) * params.sample_min, flow_ul_per_min=q)
            for i, q in enumerate(flows)
        ],
        evaporation_mg_per_h=-evaporation_g_per_min * 60_000.0,
    )
