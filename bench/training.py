"""Benchmark: every shipped scenario run to its end on the virtual clock (``itbrig scenario run
NAME --fast``), with no trainee and with its model answer, and the patient model alone.

Prints, per scenario, patient hours, wall and CPU seconds of each run, and the score; then the
patient model's cost per simulated hour. Goal: a scenario in under 3 s of wall time, so that a
class can replay one for the debrief at once.

    .venv/bin/python bench/training.py
"""

from __future__ import annotations

import time

from rig.service.training import run_fast
from rig.therapy.patient import PatientModel, parse_patient
from rig.therapy.scenario import load_scenario, shipped_scenarios

GOAL_S = 3.0


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    columns = ("idle wall s", "idle cpu s", "idle score", "demo wall s", "demo cpu s")
    print(f"{'scenario':<20} {'hours':>6} " + " ".join(f"{c:>11}" for c in columns)
          + f" {'demo score':>11}  goal")  # fmt: skip
    worst_s = 0.0
    for name in shipped_scenarios():
        scenario = load_scenario(name)
        idle, idle_wall, idle_cpu = timed(lambda s=scenario: run_fast(s))
        demo, demo_wall, demo_cpu = timed(lambda s=scenario: run_fast(s, script=s.model_answer))
        worst_s = max(worst_s, idle_wall, demo_wall)
        met = "met" if max(idle_wall, demo_wall) < GOAL_S else "MISSED"
        print(f"{name:<20} {scenario.duration_h:>6g} {idle_wall:>11.2f} {idle_cpu:>11.2f} "
              f"{idle['score']:>11.2f} {demo_wall:>11.2f} {demo_cpu:>11.2f} "
              f"{demo['score']:>11.2f}  {met}")  # fmt: skip
    model = PatientModel(parse_patient({"adapted_ug_per_day": 300}))
    hours = 24 * 365
    _, wall, _ = timed(lambda: [model.advance(1.0, 12.5) or model.snapshot() for _ in range(hours)])
    print(f"\npatient model: {hours} hourly steps with snapshots in {wall * 1000:.0f} ms "
          f"({wall / hours * 1e6:.1f} µs per patient hour)")  # fmt: skip
    print(f"slowest scenario run {worst_s:.2f} s (goal < {GOAL_S:g} s)")


if __name__ == "__main__":
    main()
