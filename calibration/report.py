"""Results as people read them: a text table for the command line."""

from __future__ import annotations

from typing import Any

from calibration.models import Result

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
    document = result.model_dump()
    lines = [f"{result.procedure} calibration"]
    for key, title, fmt in SCALARS:
        value = document.get(key)
        if value is not None:
            lines.append(f"  {title:<30} {fmt.format(value)}")
    if result.procedure in TABLES:
        key, columns = TABLES[result.procedure]
        lines.append("")
        lines.extend(_table(document[key], columns))
    return "\n".join(lines)
