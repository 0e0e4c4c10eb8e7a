"""Soak: one bench hour at ×1440 on the simulated bench, then every bench fault once.

The rig service runs in-process on a virtual clock (``rig.service.virtual``): the same loop, step
generator, physics, flow sensor with its default noise, and books, as fast as the CPU allows.
Every example program runs in turn (flex, periodic boluses, priming then continuous, a patient
bolus program with random requests and a change of time compression, a refill at a new
concentration with its bridge bolus); the reservoir is refilled whenever it runs below 4 mL.
Then each bench fault is injected once on a running continuous program.

Prints a table: false alarms (goal 0), books against motor per phase (goal ≤ 1 step), effective
compression min/max, and the detection time of each fault (goal ≤ 10 bench s).

    .venv/bin/python bench/soak.py [--minutes 60] [--seed 20261129]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rig.service.api import FaultRequest  # noqa: E402
from rig.service.virtual import BENCH_FAULT_EXAMPLES, VirtualRig  # noqa: E402
from rig.therapy.drugs import load_program  # noqa: E402

EXAMPLES = ROOT / "examples" / "programs"
REFILL_BELOW_ML = 4.0
SAMPLE_S = 1.0
DETECTION_LIMIT_S = 30.0


def program(name: str, **changes: object) -> dict:
    return load_program(EXAMPLES / f"{name}.toml").model_dump(mode="json") | changes


@dataclass
class Phase:
    name: str
    bench_s: float
    alarms: list[str] = field(default_factory=list)
    books_minus_motor_steps: float = 0.0
    boluses: int = 0


class Soak:
    def __init__(self, rig: VirtualRig, seed: int) -> None:
        self.rig = rig
        self.service = rig.service
        self.rng = random.Random(seed)
        self.effective: list[float] = []
        self.phases: list[Phase] = []
        self.alarm_rows_seen = 0

    # -- helpers ----------------------------------------------------------------------------

    def run(self, bench_s: float, *, bolus_per_bench_s: float = 0.0) -> int:
        """Run, sampling the effective compression; random patient-bolus requests if asked."""
        granted = 0
        end_s = self.rig.now_s + bench_s
        while self.rig.now_s < end_s - 1e-9:
            self.rig.run(min(SAMPLE_S, end_s - self.rig.now_s))
            status = self.service.status()
            self.effective.append(status["clock"]["time_compression_effective"])
            if bolus_per_bench_s and self.rng.random() < bolus_per_bench_s * SAMPLE_S:
                granted += self.service.request_patient_bolus("trainee")["granted"]
            if self.service.engine.state.reservoir.volume_ml < REFILL_BELOW_ML:
                self.refill(self.service.engine.state.program.concentration_ug_per_ml)
        return granted

    def refill(self, concentration_ug_per_ml: float) -> None:
        service = self.service
        service.stop_delivery("clinician")
        service.refill_withdrawn(service.engine.state.reservoir.volume_ml)
        service.refill_fill(20.0, concentration_ug_per_ml, "clinician")
        service.start_delivery("clinician")

    def books_minus_motor(self) -> float:
        service = self.service
        service.engine.advance()
        motor_ul = service.motion.zero_ul + service.bench.stepper.steps_issued * service.ul_per_step
        return (service.engine.state.delivered_ul - motor_ul) / service.ul_per_step

    def new_alarms(self) -> list[str]:
        rows = self.rig.store.alarm_history(limit=1000)
        fresh = rows[: len(rows) - self.alarm_rows_seen]
        self.alarm_rows_seen = len(rows)
        return [row["code"] for row in fresh]

    def phase(self, name: str, prog: dict, bench_s: float, **run_options: float) -> Phase:
        self.rig.confirm(prog)
        self.service.start_delivery("clinician")
        phase = Phase(name, bench_s)
        phase.boluses = self.run(bench_s, **run_options)
        phase.books_minus_motor_steps = self.books_minus_motor()
        phase.alarms = self.new_alarms()
        self.phases.append(phase)
        return phase

    # -- the hour -----------------------------------------------------------------------------

    def hour(self, minutes: float) -> None:
        scale = minutes / 60.0
        self.phase("flex (a week)", program("flex"), 420 * scale)
        self.phase("periodic boluses", program("periodic_bolus"), 420 * scale)
        self.phase("priming, then continuous", program("priming_bolus"), 360 * scale)
        self.phase(
            "patient bolus, random requests",
            program("patient_bolus"),
            600 * scale,
            bolus_per_bench_s=4 / 60,
        )
        self.service.set_time_compression(360.0)
        self.phase("patient bolus at x360", program("patient_bolus"), 300 * scale)
        self.service.set_time_compression(1440.0)
        self.refill(1000.0)  # a new concentration: the catheter still holds 500 µg/mL
        self.phase(
            "bridge bolus, then continuous",
            program("bridge_bolus", concentration_ug_per_ml=1000),
            600 * scale,
        )
        self.phase("continuous", program("continuous", concentration_ug_per_ml=1000), 900 * scale)

    def faults(self) -> list[tuple[str, str, float | None]]:
        results = []
        for fault, alarm in BENCH_FAULT_EXAMPLES:
            self.rig.confirm(program("continuous", concentration_ug_per_ml=1000))
            self.service.start_delivery("clinician")
            self.run(9.0)  # settle and fill one monitor window
            self.new_alarms()
            self.service.inject_faults(FaultRequest.model_validate(fault))
            injected_at = self.rig.now_s
            detected = None
            while self.rig.now_s - injected_at < DETECTION_LIMIT_S:
                self.rig.run(0.05)
                if alarm in self.rig.active_codes():
                    detected = self.rig.now_s - injected_at
                    break
            results.append((next(iter(fault)), alarm, detected))
            self.service.clear_faults()
            self.rig.run(3.0)
            self.service.acknowledge(None, "clinician")
            self.rig.run(1.0)
            self.service.acknowledge(None, "clinician")
            self.new_alarms()
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="bench minutes (default 60)")
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="itbrig-soak-") as data_dir,
        VirtualRig(Path(data_dir)) as rig,
    ):
        soak = Soak(rig, args.seed)
        soak.hour(args.minutes)
        hour_effective = list(soak.effective)
        faults = soak.faults()
    wall_s = time.perf_counter() - started

    print(f"Soak: {args.minutes:g} bench minutes at x1440 nominal, then 8 faults "
          f"({wall_s:.0f} s wall on the virtual clock)\n")  # fmt: skip
    print("| phase | bench s | boluses granted | books − motor (steps) | alarms |")
    print("|---|---|---|---|---|")
    for phase in soak.phases:
        print(
            f"| {phase.name} | {phase.bench_s:.0f} | {phase.boluses} | "
            f"{phase.books_minus_motor_steps:+.2f} | {', '.join(phase.alarms) or 'none'} |"
        )
    false_alarms = sum(len(phase.alarms) for phase in soak.phases)
    worst = max(abs(phase.books_minus_motor_steps) for phase in soak.phases)
    print()
    print("| measure | value | goal |")
    print("|---|---|---|")
    print(f"| false alarms in the hour | {false_alarms} | 0 |")
    print(f"| worst books − motor at a phase end | {worst:.2f} steps | ≤ 1 step |")
    print(f"| effective compression, min / max | x{min(hour_effective):.0f} / "
          f"x{max(hour_effective):.0f} | ≤ x1440 |")  # fmt: skip
    print()
    print("| fault | alarm | detected after (bench s) | goal |")
    print("|---|---|---|---|")
    for name, alarm, detected in faults:
        shown = "not detected" if detected is None else f"{detected:.2f}"
        print(f"| {name} | {alarm} | {shown} | ≤ 10 |")
    missed = [name for name, _alarm, detected in faults if detected is None or detected > 10]
    return 0 if false_alarms == 0 and worst <= 1 and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
