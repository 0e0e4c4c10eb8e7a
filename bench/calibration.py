"""Benchmark: the calibration commands outsiders run, full length, on the simulated bench.

Runs, as a user would, ``itbrig calibrate volume --fast --json --save`` and the full 120-min
``itbrig calibrate accuracy --fast --json`` at each rate, before and after applying the volume
calibration, on a bench whose syringe bore is 1.5 % above nominal. Prints wall time, CPU time and
the results. Goal: each command under 30 s on 2 cores; ratio within 0.3 %; A ≈ +3 % before and
|A| ≤ 0.5 % after.

    .venv/bin/python bench/calibration.py [--rates 50,100,150]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 30.0
CONFIG = """
[sim]
actual_inner_diameter_mm = 19.41695
"""
TRUE_RATIO = 1.015**2


def itbrig(*args: str) -> tuple[dict, float, float]:
    """Run one itbrig command; its JSON, wall seconds and CPU seconds of the child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(
        [str(Path(sys.executable).with_name("itbrig")), *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall_s = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return json.loads(out), wall_s, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,150", help="µL/min, comma-separated")
    rates = [float(r) for r in parser.parse_args().rates.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "rig.toml"
        config.write_text(CONFIG)
        saved = Path(folder) / "volume.json"
        base = ["--config", str(config), "--fast", "--json"]
        rows = []
        volume, wall_s, cpu_s = itbrig("calibrate", "volume", *base, "--save", str(saved))
        ratio = volume["ul_per_step_measured"] / volume["ul_per_step_nominal"]
        rows.append(("volume", "", f"ratio {ratio:.5f} (true {TRUE_RATIO:.5f})", wall_s, cpu_s))
        for rate in rates:
            for label, extra in (("before", []), ("after", ["--use-calibration", str(saved)])):
                args = ["calibrate", "accuracy", *base, "--rate-ul-per-min", f"{rate:g}", *extra]
                result, wall_s, cpu_s = itbrig(*args)
                outcome = f"A {result['mean_error_pct']:+.3f} % ({label})"
                rows.append(("accuracy 120 min", f"{rate:g}", outcome, wall_s, cpu_s))
    print(f"{'command':<17} {'µL/min':>6}  {'result':<34} {'wall s':>7} {'CPU s':>6}  goal")
    for command, rate, outcome, wall_s, cpu_s in rows:
        verdict = "met" if wall_s < GOAL_S else "MISSED"
        print(f"{command:<17} {rate:>6}  {outcome:<34} {wall_s:7.1f} {cpu_s:6.1f}  {verdict}")


if __name__ == "__main__":
    main()
