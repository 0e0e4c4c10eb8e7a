"""Benchmark: step lateness of the software step generator, and schedule drift over a long run.

Runs the real-time step thread over MockFactory pins with the simulated bench physics attached
(what ``itbrig serve`` runs on a development machine), at 50, 500 and 5000 steps/s, idle and with
a CPU-busy process beside it, then runs a rate whose period is not a whole number of µs and
samples |issued − ideal| throughout. Prints a table.

    .venv/bin/python bench/step_timing.py [--seconds 10] [--drift-minutes 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time

from gpiozero import Device

from hal.config import HardwareConfig
from hal.devices import SyringeDrive
from hal.pins import make_sim_factory
from hal.sim.bench import SimulatedBench
from hal.stepgen import SoftwareStepGenerator

RATES_STEPS_PER_S = (50.0, 500.0, 5000.0)
DRIFT_RATE_STEPS_PER_S = 3 / 0.0007  # period 233.333… µs


def burn_cpu(stop: multiprocessing.synchronize.Event) -> None:
    """A CPU-busy neighbour: a pure-Python loop in another process."""
    count = 0
    while not stop.is_set():
        for _ in range(100_000):
            count += 1


def build(config: HardwareConfig):
    factory = make_sim_factory()
    Device.pin_factory = factory
    drive = SyringeDrive.from_config(config.pins, config.drive, pin_factory=factory)
    physics = SimulatedBench(config, factory)
    drive.energise()
    return factory, drive, physics


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def lateness_run(config: HardwareConfig, rate: float, seconds: float) -> dict[str, float]:
    factory, drive, physics = build(config)
    stepper = SoftwareStepGenerator(drive, record_lateness=True)
    stepper.start()
    stepper.set_rate(rate)
    time.sleep(seconds)
    stepper.stop()
    stepper.close()
    lateness_us = sorted(value * 1e6 for value in stepper.lateness_s or [0.0])
    result = {
        "steps": float(stepper.steps_issued),
        "p50": percentile(lateness_us, 0.50),
        "p99": percentile(lateness_us, 0.99),
        "max": lateness_us[-1],
        "mean": statistics.fmean(lateness_us),
    }
    physics.close()
    drive.close()
    factory.reset()
    return result


def drift_run(config: HardwareConfig, minutes: float) -> dict[str, float]:
    factory, drive, physics = build(config)
    stepper = SoftwareStepGenerator(drive)
    stepper.start()
    stepper.set_rate(DRIFT_RATE_STEPS_PER_S)
    gaps: list[float] = []
    deadline = time.perf_counter() + minutes * 60
    while time.perf_counter() < deadline:
        time.sleep(0.01)
        with stepper._lock:  # a consistent snapshot of the count and the schedule
            gap = stepper._schedule.ideal_steps(time.perf_counter()) - stepper.steps_issued
        gaps.append(abs(gap))
    stepper.set_rate(0.0)  # pause, keeping the partial step: the loop catches up at once
    time.sleep(0.05)
    final = abs(stepper.ideal_steps() - stepper.steps_issued)
    issued = stepper.steps_issued
    stepper.close()
    physics.close()
    drive.close()
    factory.reset()
    gaps.sort()
    return {
        "samples": len(gaps),
        "p99": percentile(gaps, 0.99),
        "p9999": percentile(gaps, 0.9999),
        "worst": gaps[-1],
        "final": final,
        "steps": issued,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per lateness run")
    parser.add_argument("--drift-minutes", type=float, default=10.0, help="length of drift run")
    args = parser.parse_args()
    config = HardwareConfig()
    print(f"step timing on {os.cpu_count()} cores, {args.seconds:g} s per run\n")
    print("| load | steps/s | steps | p50 µs | p99 µs | max µs |")
    print("|---|---:|---:|---:|---:|---:|")
    for load in ("idle", "CPU-busy process"):
        stop = multiprocessing.Event()
        burner = None
        if load != "idle":
            burner = multiprocessing.Process(target=burn_cpu, args=(stop,), daemon=True)
            burner.start()
        try:
            for rate in RATES_STEPS_PER_S:
                row = lateness_run(config, rate, args.seconds)
                print(
                    f"| {load} | {rate:g} | {row['steps']:.0f} | {row['p50']:.0f} | "
                    f"{row['p99']:.0f} | {row['max']:.0f} |",
                    flush=True,
                )
        finally:
            stop.set()
            if burner is not None:
                burner.join()
    print()
    drift = drift_run(config, args.drift_minutes)
    period_us = 1e6 / DRIFT_RATE_STEPS_PER_S
    print(f"| drift run | rate {DRIFT_RATE_STEPS_PER_S:.3f} steps/s (period {period_us:.3f} µs) |")
    print("|---|---:|")
    print(f"| length | {args.drift_minutes:g} min, {drift['steps']:.0f} steps |")
    print(f"| samples of issued − ideal | {drift['samples']:.0f} |")
    print(f"| abs(issued − ideal) while running, p99 | {drift['p99']:.2f} |")
    print(f"| abs(issued − ideal) while running, p99.99 | {drift['p9999']:.2f} |")
    print(f"| abs(issued − ideal) while running, max (includes lateness) | {drift['worst']:.2f} |")
    print(f"| abs(issued − ideal) at the end | {drift['final']:.2f} |")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
