"""Pure analysis for the calibration procedures: water density, straight-line fits with their
95 % uncertainty, and the IEC 60601-2-24 start-up and trumpet curves.

The accuracy formulas follow the form commonly reproduced from IEC 60601-2-24 in pump
manufacturers' and analyzer manuals; they are not a claim of compliance with the standard.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from rig.therapy.units import UL_PER_ML

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
"""Student's t, two-sided 95 % (0.975 quantile), for 1 to 30 degrees of freedom."""

Z_975 = 1.959964


def t_95(degrees_of_freedom: int) -> float:
    """Coverage factor of a two-sided 95 % interval for *degrees_of_freedom* (≥ 1)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom must be >= 1, not {degrees_of_freedom}")
    if degrees_of_freedom <= len(T_975):
        return T_975[degrees_of_freedom - 1]
    return Z_975 + 2.4 / degrees_of_freedom  # within 0.002 of t above 30 degrees of freedom


def water_density_g_per_ml(temperature_c: float) -> float:
    """Density of air-free pure water (Tanaka et al. 2001, Metrologia 38, 301), 0–40 °C."""
    if not 0.0 <= temperature_c <= 40.0:
        raise ValueError(f"water temperature must be 0..40 °C, not {temperature_c!r}")
    t = temperature_c
    a1, a2, a3, a4, a5 = -3.983035, 301.797, 522528.9, 69.34881, 999.974950
    kg_per_m3 = a5 * (1 - (t + a1) ** 2 * (t + a2) / (a3 * (t + a4)))
    return kg_per_m3 / 1000.0


@dataclass(frozen=True)
class LineFit:
    """y = slope · x + intercept by least squares, with the slope's 95 % expanded uncertainty."""

    slope: float
    intercept: float
    slope_u95: float
    intercept_u95: float
    residuals: tuple[float, ...]


def fit_line(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Least-squares straight line through at least three points with distinct x."""
    n = len(x)
    if n != len(y) or n < 3:
        raise ValueError(f"a fit needs at least three (x, y) pairs, not {n} x and {len(y)} y")
    mean_x = sum(x) / n
    mean_y = sum(y) / n
    sxx = sum((xi - mean_x) ** 2 for xi in x)
    if sxx <= 0:
        raise ValueError("a fit needs at least two different x values")
    slope = sum((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, y, strict=True)) / sxx
    intercept = mean_y - slope * mean_x
    residuals = tuple(yi - (slope * xi + intercept) for xi, yi in zip(x, y, strict=True))
    s = math.sqrt(sum(r * r for r in residuals) / (n - 2))
    k = t_95(n - 2)
    return LineFit(
        slope=slope,
        intercept=intercept,
        slope_u95=k * s / math.sqrt(sxx),
        intercept_u95=k * s * math.sqrt(1 / n + mean_x * mean_x / sxx),
        residuals=residuals,
    )


def flows_ul_per_min(
    masses_g: Sequence[float], sample_min: float, density_g_per_ml: float
) -> list[float]:
    """Q_i from successive mass differences: (W_i − W_{i−1}) / (S · d), in µL/min."""
    return [
        (after - before) / density_g_per_ml * UL_PER_ML / sample_min
        for before, after in itertools.pairwise(masses_g)
    ]


@dataclass(frozen=True)
class TrumpetPoint:
    """Largest and smallest moving-window mean percentage error for observation window P."""

    window_min: float
    ep_max_pct: float
    ep_min_pct: float


@dataclass(frozen=True)
class AccuracyAnalysis:
    """Mean error A over the analysis period and the trumpet curve."""

    mean_flow_ul_per_min: float
    mean_error_pct: float
    windows: tuple[TrumpetPoint, ...]


def trumpet(
    masses_g: Sequence[float],
    *,
    rate_ul_per_min: float,
    sample_min: float,
    density_g_per_ml: float,
    windows_min: Sequence[float],
) -> AccuracyAnalysis:
    """A and Ep(max)/Ep(min) over the analysis period, whose masses (every S) are *masses_g*.

    A = 100 (Q̄ − r)/r with Q̄ the mean flow over the period; for window P, Ep(max) is the
    largest over j of (S/P) Σ_{i=j}^{j+P/S−1} 100 (Q_i − r)/r, Ep(min) the smallest, j running
    over the m = T2/S − P/S + 1 windows that fit in the period.
    """
    if rate_ul_per_min <= 0:
        raise ValueError(f"rate_ul_per_min must be > 0, not {rate_ul_per_min!r}")
    flows = flows_ul_per_min(masses_g, sample_min, density_g_per_ml)
    if not flows:
        raise ValueError("the analysis period needs at least two mass samples")
    errors_pct = [100.0 * (q - rate_ul_per_min) / rate_ul_per_min for q in flows]
    span_min = sample_min * len(flows)
    mean_flow = (masses_g[-1] - masses_g[0]) / density_g_per_ml * UL_PER_ML / span_min
    points = []
    for window_min in windows_min:
        per_window = round(window_min / sample_min)
        if per_window < 1 or abs(per_window * sample_min - window_min) > 1e-9:
            raise ValueError(
                f"window {window_min:g} min is not a whole number of {sample_min:g}-min samples"
            )
        if per_window > len(errors_pct):
            raise ValueError(
                f"window {window_min:g} min is longer than the {span_min:g}-min analysis period"
            )
        means = [
            sum(errors_pct[j : j + per_window]) / per_window
            for j in range(len(errors_pct) - per_window + 1)
        ]
        points.append(TrumpetPoint(window_min, max(means), min(means)))
    return AccuracyAnalysis(
        mean_flow_ul_per_min=mean_flow,
        mean_error_pct=100.0 * (mean_flow - rate_ul_per_min) / rate_ul_per_min,
        windows=tuple(points),
    )
