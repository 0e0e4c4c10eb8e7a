"""The PDF report of a calibration run: a summary page (who, when, parameters, the calibration in
force, results, pass/fail against the limits) and the run's plots — for the accuracy test the
start-up curve and the trumpet curve.

matplotlib draws the plots and, through its own PDF backend, writes the pages: one well-kept
dependency for both (no second PDF library), used through :class:`~matplotlib.figure.Figure`
objects only, never pyplot's global state, so it is safe in the service's threads.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from calibration.report import Limits, result_table_lines, verdicts

A4_INCHES = (8.27, 11.69)
NOTICE = "ITB pump training rig: training device, not for clinical use."
IEC_NOTE = (
    "Accuracy formulas follow the commonly reproduced form of IEC 60601-2-24;\n"
    "this report is not a claim of compliance."
)


def pdf_report(run: dict[str, Any], limits: Limits | None = None) -> bytes:
    """The run's report as PDF bytes."""
    buffer = io.BytesIO()
    result = run.get("result") or {}
    title = (
        f"{run.get('procedure', result.get('procedure', 'calibration'))} run {run.get('id', '')}"
    )
    with PdfPages(buffer, metadata={"Title": f"Calibration report: {title}"}) as pdf:
        pdf.savefig(_summary(run, limits or Limits()))
        for figure in plot_figures(result):
            pdf.savefig(figure)
    return buffer.getvalue()


def _summary(run: dict[str, Any], limits: Limits) -> Figure:
    figure = Figure(figsize=A4_INCHES)
    result = run.get("result") or {}
    lines = [NOTICE, ""]
    for key in ("id", "procedure", "state", "role", "started_at_utc", "finished_at_utc"):
        if run.get(key) is not None:
            lines.append(f"{key.replace('_', ' '):<18} {run[key]}")
    if run.get("message"):
        lines.append(f"{'message':<18} {run['message']}")
    lines += ["", "Parameters"]
    lines += [f"  {k:<24} {v}" for k, v in (run.get("params") or {}).items()]
    lines += ["", "Calibration in force"]
    lines += [f"  {k:<32} {v}" for k, v in (run.get("in_force") or {}).items()]
    if result:
        lines += ["", *result_table_lines(result), "", "Pass / fail"]
        for verdict in verdicts(result, limits):
            value = "—" if verdict.value is None else f"{verdict.value:+.4g}"
            mark = "PASS" if verdict.passed else "FAIL"
            lines.append(f"  {mark}  {verdict.check:<28} {value:>10}  limit {verdict.limit}")
    if result.get("procedure") == "accuracy":
        lines += ["", IEC_NOTE]
    figure.text(0.06, 0.96, "Calibration report", fontsize=16, weight="bold", va="top")
    figure.text(0.06, 0.92, "\n".join(lines[:90]), family="monospace", fontsize=7, va="top")
    return figure


def plot_figures(result: dict[str, Any]) -> list[Figure]:
    """The plots of a result (none for a run without one)."""
    draw = PLOTS.get(result.get("procedure", ""))
    if draw is None:
        return []
    figure = Figure(figsize=(A4_INCHES[0], A4_INCHES[1] / 2))
    draw(figure, result)
    figure.tight_layout()
    return [figure]


def draw_startup(ax: Axes, result: dict[str, Any]) -> None:
    """Start-up curve: Q_i against time, the set rate and the start of the analysis period."""
    flows = result["flows"]
    ax.plot([f["t_min"] for f in flows], [f["flow_ul_per_min"] for f in flows], lw=1)
    ax.axhline(result["rate_ul_per_min"], color="grey", ls="--", lw=0.8, label="set rate")
    ax.axvline(result["startup_min"], color="grey", ls=":", lw=0.8, label="analysis from")
    ax.set(xlabel="time (min)", ylabel="flow Q_i (µL/min)", title="Start-up curve")
    ax.legend(fontsize=7)


def draw_trumpet(ax: Axes, result: dict[str, Any]) -> None:
    """Trumpet curve: Ep(max) and Ep(min) against the window P, with A and zero."""
    windows = result["windows"]
    sizes = [w["window_min"] for w in windows]
    ax.plot(sizes, [w["ep_max_pct"] for w in windows], "o-", label="Ep(max)")
    ax.plot(sizes, [w["ep_min_pct"] for w in windows], "o-", label="Ep(min)")
    ax.axhline(
        result["mean_error_pct"],
        color="C2",
        ls="--",
        label=f"A = {result['mean_error_pct']:+.2f} %",
    )
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set(xlabel="observation window P (min)", ylabel="error (%)", title="Trumpet curve")
    ax.legend(fontsize=7)


def _accuracy(figure: Figure, result: dict[str, Any]) -> None:
    left, right = figure.subplots(1, 2)
    draw_startup(left, result)
    draw_trumpet(right, result)


def _volume(figure: Figure, result: dict[str, Any]) -> None:
    left, right = figure.subplots(1, 2)
    points = result["points"]
    steps = [p["steps"] for p in points]
    left.plot(steps, [p["volume_ul"] for p in points], "o", label="weighed")
    fitted = [result["ul_per_step_measured"] * s + result["intercept_ul"] for s in steps]
    left.plot(steps, fitted, "-", lw=0.8, label="fit")
    left.set(xlabel="steps", ylabel="volume (µL)", title="Volume against steps")
    left.legend(fontsize=7)
    right.bar(range(1, len(points) + 1), [p["residual_ul"] for p in points])
    right.set(xlabel="point", ylabel="residual (µL)", title="Residuals")


def _rate(figure: Figure, result: dict[str, Any]) -> None:
    ax = figure.subplots()
    points = result["points"]
    ax.semilogx([p["rate_ul_per_min"] for p in points], [p["error_pct"] for p in points], "o-")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set(xlabel="set rate (µL/min)", ylabel="error (%)", title="Rate error")


def _flow_sensor(figure: Figure, result: dict[str, Any]) -> None:
    ax = figure.subplots()
    points = result["points"]
    sensor = [p["sensor_ul_per_min"] for p in points]
    ax.plot(sensor, [p["reference_ul_per_min"] for p in points], "o", label="balance")
    ax.plot(sensor, [result["scale"] * q + result["offset_ul_per_min"] for q in sensor], "-")
    ax.set(xlabel="sensor (µL/min)", ylabel="balance (µL/min)", title="Sensor against balance")


def _occlusion(figure: Figure, result: dict[str, Any]) -> None:
    ax = figure.subplots()
    samples = result["samples"]
    ax.plot([s["t_s"] for s in samples], [s["sensor_ul_per_min"] for s in samples])
    if result["time_to_alarm_s"] is not None:
        ax.axvline(result["time_to_alarm_s"], color="red", ls="--", label=result["alarm"])
        ax.legend(fontsize=7)
    ax.set(xlabel="bench s after closing", ylabel="sensor flow (µL/min)", title="Occlusion")


def _bolus(figure: Figure, result: dict[str, Any]) -> None:
    ax = figure.subplots()
    points = result["points"]
    ax.bar([p["number"] for p in points], [p["delivered_ul"] for p in points])
    ax.axhline(result["volume_ul"], color="grey", ls="--", label="programmed")
    ax.set(xlabel="bolus", ylabel="delivered (µL)", title="Patient boluses")
    ax.legend(fontsize=7)


PLOTS = {
    "accuracy": _accuracy,
    "volume": _volume,
    "rate": _rate,
    "flow-sensor": _flow_sensor,
    "occlusion": _occlusion,
    "bolus": _bolus,
}
