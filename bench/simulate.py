"""Benchmark: fast-forward simulation of a flex program with four patient-bolus requests a day.

Runs ``rig.therapy.simulate.simulate`` over 30, 90 and 180 patient days (13-step flex program with a
different weekend schedule, 40 mL reservoir at 2000 µg/mL, patient bolus 50 µg with a 3 h
lockout and 4 per 24 h, requests at 07:00, 12:00, 17:00 and 22:00) and prints patient time, wall
time and their ratio. Goal: 180 days in under 1 s.

    .venv/bin/python bench/simulate.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from rig.therapy.drugs import parse_program
from rig.therapy.simulate import BolusRequests, SimulationSettings, simulate

DAYS = (30.0, 90.0, 180.0)
GOAL_S = 1.0

WEEKDAY_STEPS = [
    {"start": f"{hour:02d}:00", "dose_ug_per_day": dose}
    for hour, dose in zip(
        (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21, 23),
        (150, 140, 160, 220, 300, 280, 260, 280, 300, 260, 220, 180, 160),
        strict=True,
    )
]
PROGRAM = {
    "drug": "baclofen",
    "concentration_ug_per_ml": 2000,
    "mode": "flex",
    "steps": WEEKDAY_STEPS,
    "weekdays": {
        "sat": [
            {"start": "00:00", "dose_ug_per_day": 200},
            {"start": "09:00", "dose_ug_per_day": 260},
        ],
        "sun": [{"start": "00:00", "dose_ug_per_day": 200}],
    },
    "patient_bolus": {"dose_ug": 50, "duration_min": 15, "lockout_min": 180, "max_per_24h": 4},
}
REQUESTS = BolusRequests(daily=["07:00", "12:00", "17:00", "22:00"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per row (best is shown)")
    args = parser.parse_args()
    program = parse_program(PROGRAM, "bench program")
    print(
        f"{'patient days':>12}  {'wall s':>8}  {'patient/wall':>13}  {'granted':>7}  "
        f"{'denied':>6}  {'delivered mL':>12}  alarms"
    )
    worst_180_s = 0.0
    for days in DAYS:
        settings = SimulationSettings(days=days, capacity_ml=40.0)
        best_s = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = simulate(program, settings, REQUESTS)
            best_s = min(best_s, time.perf_counter() - started)
        if days == DAYS[-1]:
            worst_180_s = best_s
        ratio = days * 86400 / best_s
        alarms = ", ".join(f"{a.code}@{a.at_h / 24:.1f}d" for a in result.alarms) or "none"
        print(
            f"{days:>12g}  {best_s:>8.3f}  {ratio:>13.3g}  {result.patient_boluses.granted:>7}  "
            f"{result.patient_boluses.denied:>6}  {result.delivered_ml:>12.3f}  {alarms}"
        )
    verdict = "meets" if worst_180_s < GOAL_S else "MISSES"
    print(f"180 days in {worst_180_s:.3f} s: {verdict} the goal of < {GOAL_S:g} s")
    return 0 if worst_180_s < GOAL_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
