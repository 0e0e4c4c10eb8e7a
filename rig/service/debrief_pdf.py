"""A scenario's debrief as a PDF: the score and checklist, then the patient's curves (effect,
muscle tone, vital signs) with the faults and the trainee's actions on the same time axis.

matplotlib through :class:`~matplotlib.figure.Figure` objects only (no pyplot state), as the
calibration reports use it: one library for the plots and the pages.
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from rig.therapy.patient import MAS_LEVELS

A4_INCHES = (8.27, 11.69)
NOTICE = "ITB pump training rig: training device, not for clinical use."
PAGE_CHARS = 110  # monospace 7 pt across an A4 page with margins
SOURCE_COLOURS = {"fault": "red", "trainee": "green"}
"""Vertical markers: a fault set by the scenario or the trainer, an action of the trainee."""


def debrief_pdf(report: dict[str, Any]) -> bytes:
    """The debrief of a finished scenario run as PDF bytes."""
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"Title": f"Debrief: {report['title']}"}) as pdf:
        pdf.savefig(_summary_page(report))
        pdf.savefig(_curves_page(report))
    return buffer.getvalue()


def checklist_lines(report: dict[str, Any]) -> list[str]:
    """One line per checklist item: done (when), missed or not triggered, weight, critical."""
    lines = []
    for item in report["items"]:
        if item["done"]:
            state = f"done at {item['at_h']:.1f} h"
        else:
            state = "MISSED" if item["scored"] else "not triggered"
        critical = ", critical" if item["critical"] else ""
        lines.append(f"  {state:<16} {item['description']} (weight {item['weight']}{critical})")
    return lines


def _summary_page(report: dict[str, Any]) -> Figure:
    figure = Figure(figsize=A4_INCHES)
    mastery = "MASTERY" if report["mastery"] else "no mastery"
    lines = [
        NOTICE,
        "",
        f"scenario   {report['scenario']} ({report['mode']} mode)",
        f"trainee    {report.get('trainee') or '—'}",
        f"started    {report.get('started_at', '—')}, ended at {report['ended_h']:g} patient h"
        + (" (stopped early)" if report.get("stopped_early") else ""),
        f"score      {report['points']}/{report['max_points']} ({report['score']:.0%}): "
        f"{mastery} (needs {report['mastery_fraction']:.0%} and no critical miss)",
        "",
        "Checklist",
        *checklist_lines(report),
        "",
        "Timeline of faults and actions",
        *(
            f"  {action['at_h']:6.2f} h  {action['source']:<8} {action['action']}"
            for action in report["actions"]
        ),
        "",
        "Debrief",
        *(f"  - {note}" for note in report.get("debrief", [])),
    ]
    figure.text(0.06, 0.96, report["title"], fontsize=14, weight="bold", va="top", wrap=True)
    wrapped = [
        part
        for line in lines
        for part in textwrap.wrap(
            line, PAGE_CHARS, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 4)
        )
        or [""]
    ]
    figure.text(0.06, 0.92, "\n".join(wrapped[:95]), family="monospace", fontsize=7, va="top")
    return figure


def _mark_actions(ax: Axes, report: dict[str, Any]) -> None:
    for action in report["actions"]:
        colour = SOURCE_COLOURS.get(action["source"], "grey")
        ax.axvline(action["at_h"], color=colour, lw=0.7, ls="--", alpha=0.8)


def _curves_page(report: dict[str, Any]) -> Figure:
    figure = Figure(figsize=A4_INCHES)
    effect_ax, tone_ax, vitals_ax = figure.subplots(3, 1, sharex=True)
    timeline = report["timeline"]
    hours = [entry["at_h"] for entry in timeline]
    effect_ax.plot(hours, [entry["effect"] for entry in timeline], color="C0")
    effect_ax.axhline(1.0, color="grey", lw=0.6)
    effect_ax.set(ylabel="effect (× adapted dose)", title="Patient (faults red, actions green)")
    tone_ax.step(hours, [MAS_LEVELS.index(entry["mas"]) for entry in timeline], where="post")
    tone_ax.set_yticks(range(len(MAS_LEVELS)), MAS_LEVELS)
    tone_ax.set(ylabel="MAS")
    vitals = [entry["vitals"] for entry in timeline]
    vitals_ax.plot(hours, [v["heart_rate_per_min"] for v in vitals], label="heart rate /min")
    vitals_ax.plot(hours, [v["breathing_rate_per_min"] for v in vitals], label="breathing /min")
    temperature_ax = vitals_ax.twinx()
    temperature_ax.plot(hours, [v["temperature_c"] for v in vitals], color="C3", label="°C")
    temperature_ax.set(ylabel="temperature (°C)")
    vitals_ax.set(xlabel="patient hours", ylabel="per minute")
    vitals_ax.legend(fontsize=7, loc="upper left")
    for ax in (effect_ax, tone_ax, vitals_ax):
        _mark_actions(ax, report)
    figure.tight_layout()
    return figure
