"""Benchmark: step lateness of the step generators, and schedule drift over a long run.

``--backend software`` (the default, any machine) runs the Python step thread over MockFactory
pins with the simulated bench physics attached (what ``itbrig serve`` runs on a development
machine), at 50, 500 and 5000 steps/s, idle and with a CPU-busy process beside it, then runs a
rate whose period is not a whole number of µs and samples |issued − ideal| throughout.

``--backend lgpio`` (Raspberry Pi only) measures lgpio's software-timed pulse trains, as the
rig service drives them on a Pi: STEP is looped back with a jumper wire to a free input pin
(``--loopback-pin``, default BCM 25, header pin 22), whose rising edges the kernel timestamps;
the motor stays released (ENABLE inactive) throughout. It reports the error of every interval
between edges against the nominal period (jitter) and each edge's offset from the ideal
schedule (lateness, chunk rounding included). Prints a table.

    .venv/bin/python bench/step_timing.py [--seconds 10] [--drift-minutes 10]
    .venv/bin/python bench/step_timing.py --backend lgpio [--loopback-pin 25] [--seconds 10]
                                          [--config /etc/itbrig/rig.toml]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import threading
import time

from gpiozero import Device

from hal.config import BCM_PIN_MAX, BCM_PIN_MIN, I2C_PINS, HardwareConfig
from hal.devices import SyringeDrive
from hal.pins import make_sim_factory, pi_model
from hal.sim.bench import SimulatedBench
from hal.stepgen import LgpioStepGenerator, SoftwareStepGenerator
from rig.common.inputs import InputError
from rig.service.config import load_config

RATES_STEPS_PER_S = (50.0, 500.0, 5000.0)
DRIFT_RATE_STEPS_PER_S = 3 / 0.0007  # period 233.333… µs
DEFAULT_LOOPBACK_PIN = 25
EXIT_BAD_INPUT = 2


class BenchmarkInputError(Exception):
    """The benchmark cannot run as asked (the message says why and what is allowed)."""


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


def lgpio_unavailable_reason() -> str | None:
    """Why the lgpio backend cannot run here, or None when it can."""
    if pi_model() is None:
        return (
            "--backend lgpio needs a Raspberry Pi (this machine's /proc/device-tree/model names "
            "no Raspberry Pi); use --backend software here"
        )
    try:
        import lgpio  # noqa: F401
    except ImportError:
        return (
            "--backend lgpio needs the lgpio library: .venv/bin/pip install -e '.[pi]' "
            "(install.sh does this on a Pi)"
        )
    return None


def check_loopback_pin(config: HardwareConfig, pin: int) -> None:
    """The loopback input must be a free BCM pin: not wired to anything of the rig."""
    if not BCM_PIN_MIN <= pin <= BCM_PIN_MAX:
        raise BenchmarkInputError(
            f"--loopback-pin {pin}: BCM pins {BCM_PIN_MIN} to {BCM_PIN_MAX} only"
        )
    used = {number: name for name, number in config.pins.assignments()}
    used |= {I2C_PINS[0]: "I2C SDA", I2C_PINS[1]: "I2C SCL"}
    if pin in used:
        free = [n for n in range(BCM_PIN_MIN, BCM_PIN_MAX + 1) if n not in used]
        raise BenchmarkInputError(
            f"--loopback-pin {pin}: BCM {pin} is {used[pin]} in rig.toml; "
            f"free pins: {', '.join(map(str, free))}"
        )


def edge_statistics(ticks_ns: list[int], rate_steps_per_s: float) -> dict[str, float]:
    """Jitter and lateness of rising edges timestamped at *ticks_ns* for a nominal rate.

    ``interval_*``: |interval − period| over consecutive edges; ``offset_*``: |edge − ideal| where
    edge *n* is ideally due at the first edge + n periods. All in µs.
    """
    if len(ticks_ns) < 2:
        raise ValueError(f"need at least 2 edges to measure, got {len(ticks_ns)}")
    period_ns = 1e9 / rate_steps_per_s
    first = ticks_ns[0]
    intervals = sorted(
        abs((later - earlier) - period_ns) / 1000 for earlier, later in itertools.pairwise(ticks_ns)
    )
    offsets = sorted(
        abs((tick - first) - index * period_ns) / 1000 for index, tick in enumerate(ticks_ns)
    )
    return {
        "edges": float(len(ticks_ns)),
        "interval_p50": percentile(intervals, 0.50),
        "interval_p99": percentile(intervals, 0.99),
        "interval_max": intervals[-1],
        "offset_p50": percentile(offsets, 0.50),
        "offset_p99": percentile(offsets, 0.99),
        "offset_max": offsets[-1],
    }


def lgpio_run(
    config: HardwareConfig, rate: float, seconds: float, loopback_pin: int
) -> dict[str, float]:
    import lgpio
    from gpiozero.pins.lgpio import LGPIOFactory

    factory = LGPIOFactory()
    drive = SyringeDrive.from_config(config.pins, config.drive, pin_factory=factory)
    handle = factory._handle  # the chip gpiozero opened; the generator uses it too
    ticks_ns: list[int] = []
    lgpio.gpio_claim_alert(handle, loopback_pin, lgpio.RISING_EDGE)

    def record(_chip: int, _gpio: int, _level: int, tick_ns: int) -> None:
        ticks_ns.append(tick_ns)

    callback = lgpio.callback(handle, loopback_pin, lgpio.RISING_EDGE, record)
    stepper = LgpioStepGenerator(drive, pulse_us=config.drive.step_pulse_us)
    try:
        stepper.set_rate(rate)
        time.sleep(seconds)
        stepper.stop()
        time.sleep(0.2)  # let the last queued edges arrive
        issued = stepper.steps_issued
    finally:
        callback.cancel()
        lgpio.gpio_free(handle, loopback_pin)
        stepper.close()
        drive.close()
        factory.close()
    result = edge_statistics(ticks_ns, rate)
    result["issued"] = float(issued)
    return result


def main_lgpio(config: HardwareConfig, seconds: float, loopback_pin: int) -> None:
    check_loopback_pin(config, loopback_pin)
    reason = lgpio_unavailable_reason()
    if reason is not None:
        raise BenchmarkInputError(reason)
    print(
        f"lgpio step timing on {pi_model()}, STEP (BCM {config.pins.step}) looped back to "
        f"BCM {loopback_pin}, {seconds:g} s per run\n"
    )
    print("| steps/s | issued | edges | interval error p50 / p99 / max µs | "
          "offset from schedule p50 / p99 / max µs |")  # fmt: skip
    print("|---:|---:|---:|---|---|")
    for rate in RATES_STEPS_PER_S:
        row = lgpio_run(config, rate, seconds, loopback_pin)
        print(
            f"| {rate:g} | {row['issued']:.0f} | {row['edges']:.0f} | "
            f"{row['interval_p50']:.0f} / {row['interval_p99']:.0f} / {row['interval_max']:.0f} | "
            f"{row['offset_p50']:.0f} / {row['offset_p99']:.0f} / {row['offset_max']:.0f} |",
            flush=True,
        )


def main_software(config: HardwareConfig, seconds: float, drift_minutes: float) -> None:
    print(f"step timing on {os.cpu_count()} cores, {seconds:g} s per run\n")
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
                row = lateness_run(config, rate, seconds)
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
    drift = drift_run(config, drift_minutes)
    period_us = 1e6 / DRIFT_RATE_STEPS_PER_S
    print(f"| drift run | rate {DRIFT_RATE_STEPS_PER_S:.3f} steps/s (period {period_us:.3f} µs) |")
    print("|---|---:|")
    print(f"| length | {drift_minutes:g} min, {drift['steps']:.0f} steps |")
    print(f"| samples of issued − ideal | {drift['samples']:.0f} |")
    print(f"| abs(issued − ideal) while running, p99 | {drift['p99']:.2f} |")
    print(f"| abs(issued − ideal) while running, p99.99 | {drift['p9999']:.2f} |")
    print(f"| abs(issued − ideal) while running, max (includes lateness) | {drift['worst']:.2f} |")
    print(f"| abs(issued − ideal) at the end | {drift['final']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", choices=("software", "lgpio"), default="software",
        help="software: the Python step thread on the simulated bench (any machine); "
        "lgpio: lgpio's pulse trains on a Raspberry Pi's header",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per lateness run")
    parser.add_argument("--drift-minutes", type=float, default=10.0, help="length of drift run")
    parser.add_argument(
        "--loopback-pin", type=int, default=DEFAULT_LOOPBACK_PIN,
        help=f"lgpio: free BCM input wired to STEP (default {DEFAULT_LOOPBACK_PIN})",
    )  # fmt: skip
    parser.add_argument("--config", help="rig.toml for the pins (default: the shipped one)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if not args.seconds > 0:
            raise BenchmarkInputError(f"--seconds {args.seconds:g}: must be above 0")
        if args.backend == "lgpio":
            main_lgpio(config, args.seconds, args.loopback_pin)
        else:
            main_software(config, args.seconds, args.drift_minutes)
    except (BenchmarkInputError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
