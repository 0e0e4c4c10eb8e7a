"""What a live view draws while a run goes on: plots as plain series of points, computed by the
same analysis as the result (the kiosk draws them; it never imports this package)."""

from __future__ import annotations

from typing import Any

from calibration.analysis import flows_ul_per_min, trumpet, water_density_g_per_ml

DEFAULT_TEMPERATURE_C = 20.0
"""For the live flow only, until the result states the measured temperature."""

Plot = dict[str, Any]


def _plot(title: str, *series: tuple[str, list[list[float]]]) -> Plot:
    return {"title": title, "series": [{"name": n, "points": p} for n, p in series]}


def live_plots(procedure: str, params: dict[str, Any], samples: list[dict[str, Any]]) -> list[Plot]:
    """Plots of a run so far: for the accuracy test the flow against time and the trumpet curve
    as it forms; for the others their weighed points."""
    if procedure == "accuracy":
        return _accuracy(params, samples)
    pairs = {
        "volume": ("steps", "mass_g", "Mass (g) against steps"),
        "rate": ("rate_ul_per_min", "error_pct", "Error (%) against rate (µL/min)"),
        "flow-sensor": ("sensor_ul_per_min", "reference_ul_per_min", "Balance against sensor"),
        "bolus": ("number", "delivered_ul", "Delivered (µL) per bolus"),
    }
    if procedure not in pairs or not samples:
        return []
    x_key, y_key, title = pairs[procedure]
    points = [[float(s[x_key]), float(s[y_key])] for s in samples if x_key in s and y_key in s]
    return [_plot(title, (y_key, points))]


def _accuracy(params: dict[str, Any], samples: list[dict[str, Any]]) -> list[Plot]:
    sample_min = float(params["sample_min"])
    rate = float(params["rate_ul_per_min"])
    density = water_density_g_per_ml(params.get("temperature_c") or DEFAULT_TEMPERATURE_C)
    masses = [float(s["mass_g"]) for s in samples]
    flows = flows_ul_per_min(masses, sample_min, density)
    times = [float(s["t_min"]) for s in samples[1:]]
    flow_points = [[t, q] for t, q in zip(times, flows, strict=True)]
    end_min = float(params["duration_min"])
    plots = [
        _plot(
            "Flow (µL/min) against time (min)",
            ("Q_i", flow_points),
            ("set rate", [[0.0, rate], [end_min, rate]]),
        )
    ]
    first = round(float(params["startup_min"]) / sample_min)
    analysed = masses[first:]
    span_min = sample_min * (len(analysed) - 1)
    windows = [w for w in params["windows_min"] if w <= span_min]
    if windows:
        analysis = trumpet(
            analysed,
            rate_ul_per_min=rate,
            sample_min=sample_min,
            density_g_per_ml=density,
            windows_min=windows,
        )
        plots.append(
            _plot(
                "Trumpet: error (%) against window P (min)",
                ("Ep(max)", [[w.window_min, w.ep_max_pct] for w in analysis.windows]),
                ("Ep(min)", [[w.window_min, w.ep_min_pct] for w in analysis.windows]),
                (
                    "A",
                    [[windows[0], analysis.mean_error_pct], [windows[-1], analysis.mean_error_pct]],
                ),
            )
        )
    return plots
