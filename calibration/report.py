"""Results as people read them: a text table for the command line, pass/fail against
configurable limits, and CSV exports (raw samples; results). The PDF is :mod:`calibration.pdf`."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from calibration.models import PositiveFloat, Result
from rig.common.inputs import InputError, read_toml

SCALARS: list[tuple[str, str, str]] = [
    ("ul_per_step_nominal", "µL per step, nominal", "{:.6f}"),
    ("ul_per_step_in_force", "µL per step, in force", "{:.6f}"),
    ("ul_per_step_measured", "µL per step, measured", "{:.6f}"),
    ("ul_per_step_u95", "  95 % uncertainty", "± {:.6f}"),
    ("coefficient", "measured / nominal", "{:.5f}"),
    ("coefficient_u95", "  95 % uncertainty", "± {:.5f}"),
    ("intercept_ul", "intercept (µL)", "{:.3f}"),
    ("rate_ul_per_min", "set rate (µL/min)", "{:g}"),
    ("mean_flow_ul_per_min", "mean flow (µL/min)", "{:.3f}"),
    ("mean_error_pct", "mean error (%)", "{:+.3f}"),
    ("correction_needed", "correction needed", "{}"),
    ("zero_offset_ul_per_min", "zero offset (µL/min)", "{:+.3f}"),
    ("scale", "sensor scale", "{:.5f}"),
    ("scale_u95", "  95 % uncertainty", "± {:.5f}"),
    ("offset_ul_per_min", "sensor offset (µL/min)", "{:+.3f}"),
    ("alarm", "alarm", "{}"),
    ("time_to_alarm_s", "time to alarm (bench s)", "{:.1f}"),
    ("time_to_alarm_patient_min", "time to alarm (patient min)", "{:.1f}"),
    ("bolus_ul", "released bolus, balance (µL)", "{:.2f}"),
    ("bolus_sensor_ul", "released bolus, sensor (µL)", "{:.2f}"),
    ("volume_ul", "programmed bolus (µL)", "{:g}"),
    ("mean_ul", "mean delivered (µL)", "{:.3f}"),
    ("sd_ul", "SD (µL)", "{:.3f}"),
    ("evaporation_mg_per_h", "evaporation (mg/h)", "{:.2f}"),
    ("temperature_c", "water temperature (°C)", "{:.2f}"),
    ("density_g_per_ml", "water density (g/mL)", "{:.5f}"),
    ("bench_s", "bench time (s)", "{:.0f}"),
]

TABLES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "volume": ("points", [("steps", "steps", "{:d}"), ("volume_ul", "volume µL", "{:.3f}"),
                          ("residual_ul", "residual µL", "{:+.4f}")]),
    "accuracy": ("windows", [("window_min", "P (min)", "{:g}"),
                             ("ep_max_pct", "Ep(max) %", "{:+.3f}"),
                             ("ep_min_pct", "Ep(min) %", "{:+.3f}")]),
    "rate": ("points", [("rate_ul_per_min", "set µL/min", "{:g}"),
                        ("measured_ul_per_min", "measured", "{:.3f}"),
                        ("error_pct", "error %", "{:+.2f}"), ("factor", "factor", "{:.4f}")]),
    "flow-sensor": ("points", [("rate_ul_per_min", "set µL/min", "{:g}"),
                               ("reference_ul_per_min", "balance", "{:.3f}"),
                               ("sensor_ul_per_min", "sensor", "{:.3f}"),
                               ("temperature_c", "°C", "{:.2f}")]),
    "bolus": ("points", [("number", "bolus", "{:d}"), ("delivered_ul", "delivered µL", "{:.3f}"),
                         ("error_pct", "error %", "{:+.2f}")]),
}  # fmt: skip


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> list[str]:
    cells = [[title for _key, title, _fmt in columns]]
    cells += [[fmt.format(row[key]) for key, _title, fmt in columns] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]


def result_table(result: Result) -> str:
    """The result's headline numbers, then its table (weighed points, trumpet windows, ...)."""
    return "\n".join(result_table_lines(result.model_dump(mode="json")))


def result_table_lines(document: dict[str, Any]) -> list[str]:
    procedure = document["procedure"]
    lines = [f"{procedure} calibration"]
    for key, title, fmt in SCALARS:
        value = document.get(key)
        if value is not None:
            lines.append(f"  {title:<30} {fmt.format(value)}")
    if procedure in TABLES:
        key, columns = TABLES[procedure]
        lines.append("")
        lines.extend(_table(document[key], columns))
    return lines


class Limits(BaseModel):
    """Pass/fail limits of the report (configurable: ``--limits FILE``, a TOML table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy_mean_error_pct: PositiveFloat = 5.0
    """|A| of the accuracy test."""
    trumpet_pct: PositiveFloat | None = None
    """|Ep(max)| and |Ep(min)| of every window (None: not judged)."""
    volume_coefficient_u95: PositiveFloat = 0.005
    """95 % uncertainty of the measured over nominal µL per step."""
    rate_error_pct: PositiveFloat = 5.0
    bolus_mean_error_pct: PositiveFloat = 5.0
    bolus_sd_pct: PositiveFloat = 2.0
    """SD of the bolus volumes, as % of the programmed volume."""
    occlusion_alarm_patient_min: PositiveFloat = 240.0
    """Longest time to the occlusion alarm, in patient minutes."""
    sensor_scale_deviation: PositiveFloat = 0.05
    """|scale − 1| of the flow sensor."""


def load_limits(path: str | None) -> Limits:
    """Limits from a TOML file (every key optional), or the defaults."""
    if path is None:
        return Limits()
    data = read_toml(path, "the --limits file")
    try:
        return Limits.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InputError(f"--limits: {path}: {problems}") from None


class Verdict(BaseModel):
    check: str
    value: float | None
    limit: str
    passed: bool


def verdicts(result: dict[str, Any], limits: Limits) -> list[Verdict]:
    """Each check of *result* against *limits*."""
    checks: list[Verdict] = []

    def within(check: str, value: float | None, bound: float, unit: str = "") -> None:
        ok = value is not None and math.isfinite(value) and abs(value) <= bound
        checks.append(Verdict(check=check, value=value, limit=f"± {bound:g}{unit}", passed=ok))

    procedure = result["procedure"]
    if procedure == "accuracy":
        within("mean error A", result["mean_error_pct"], limits.accuracy_mean_error_pct, " %")
        if limits.trumpet_pct is not None:
            for window in result["windows"]:
                worst = max(abs(window["ep_max_pct"]), abs(window["ep_min_pct"]))
                within(f"Ep, P = {window['window_min']:g} min", worst, limits.trumpet_pct, " %")
    elif procedure == "volume":
        within("coefficient U95", result["coefficient_u95"], limits.volume_coefficient_u95)
    elif procedure == "rate":
        for point in result["points"]:
            rate = point["rate_ul_per_min"]
            within(f"error at {rate:g} µL/min", point["error_pct"], limits.rate_error_pct, " %")
    elif procedure == "bolus":
        within("mean bolus error", result["mean_error_pct"], limits.bolus_mean_error_pct, " %")
        sd_pct = 100.0 * result["sd_ul"] / result["volume_ul"]
        within("bolus SD", sd_pct, limits.bolus_sd_pct, " %")
    elif procedure == "occlusion":
        minutes = result["time_to_alarm_patient_min"]
        ok = minutes is not None and minutes <= limits.occlusion_alarm_patient_min
        limit = f"≤ {limits.occlusion_alarm_patient_min:g} patient min"
        checks.append(Verdict(check="time to alarm", value=minutes, limit=limit, passed=ok))
    elif procedure == "flow-sensor":
        within("|scale − 1|", result["scale"] - 1.0, limits.sensor_scale_deviation)
    return checks


RESULT_TABLES = {name: key for name, (key, _columns) in TABLES.items()} | {"accuracy": "flows"}
"""The table of each result that the results CSV holds (accuracy: the flows Q_i)."""


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def samples_csv(run: dict[str, Any]) -> str:
    """The run's raw samples, one row each (balance readings, weighed points, sensor flows)."""
    return _csv(run.get("samples") or [])


def results_csv(run: dict[str, Any], limits: Limits | None = None) -> str:
    """The run's results: headline values as ``key,value`` rows, then its table, then the
    pass/fail checks."""
    result = run.get("result") or {}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "value"])
    for key in ("id", "procedure", "state", "role", "started_at_utc", "finished_at_utc"):
        if run.get(key) is not None:
            writer.writerow([key, run[key]])
    for key, value in (run.get("in_force") or {}).items():
        writer.writerow([f"in_force.{key}", value])
    for key, value in result.items():
        if not isinstance(value, list | dict):
            writer.writerow([key, value])
    table = result.get(RESULT_TABLES.get(result.get("procedure", ""), ""))
    if table:
        out.write("\n" + _csv(table))
    if result:
        checks = verdicts(result, limits or Limits())
        out.write("\n" + _csv([c.model_dump() for c in checks]))
    return out.getvalue()
