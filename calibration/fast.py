"""Procedures on a simulated bench under a virtual clock, as fast as the CPU allows (``--fast``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from calibration.bench import CalibrationBench, ProgressFn
from hal.bench import build_bench
from hal.sim.clock import ManualClock
from rig.service.config import RigConfig

VIRTUAL_START_S = 1000.0
FAST_BAUD = 38400
SENSOR_START_S = 0.1
"""The flow sensor's first reading is ready ~60 ms after its start command."""


@contextmanager
def simulated_bench(
    config: RigConfig,
    *,
    ul_per_step: float | None = None,
    progress_fn: ProgressFn | None = None,
) -> Iterator[CalibrationBench]:
    """A :class:`CalibrationBench` over the simulated bench of *config* on a virtual clock.

    *ul_per_step* is the calibration in force (default: the nominal geometry's).
    """
    # The simulated balance paces its replies like the serial line: at the fastest baud the
    # balance allows, a two-hour run's 241 readings take a second of wall time, not five.
    config = config.model_copy(
        update={"balance": config.balance.model_copy(update={"baud": FAST_BAUD})}
    )
    clock = ManualClock(VIRTUAL_START_S)
    bench = build_bench(config, "sim", clock=clock, start_stepper=False)
    try:
        bench.flow_sensor.start()

        def wait(seconds: float) -> None:
            bench.stepper.run_until(clock() + seconds, clock.set)

        cb = CalibrationBench(
            bench,
            now_s=clock,
            wait_fn=wait,
            ul_per_step=ul_per_step or bench.ul_per_microstep,
            syringe_ul=config.sim.initial_fill_ml * 1000.0,
            time_compression=config.therapy.time_compression,
        )
        cb.wait(SENSOR_START_S)
        if progress_fn is not None:
            cb.progress_fn = progress_fn
        try:
            yield cb
        finally:
            cb.make_safe()
    finally:
        bench.close()
