"""What a calibration procedure drives: the rig's stepper, balance, flow sensor and pinch valve,
with time passing through one :meth:`CalibrationBench.wait`.

The same procedure runs on the real bench inside the rig service (``wait`` sleeps in real time
and raises :class:`Cancelled` when the engineer cancels) and on a simulated bench under a virtual
clock (``wait`` issues every step due and moves the clock at once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from calibration.analysis import water_density_g_per_ml
from hal.bench import Bench
from hal.flow_sensor import FlowReading
from rig.common.inputs import InputError

ProgressFn = Callable[["Progress"], None]

MOVE_POLL_S = 0.05
"""How often a move is checked for its end while waiting."""


class Cancelled(Exception):
    """The engineer cancelled the run; the motor is stopped and the valve open again."""


class CalibrationError(Exception):
    """A procedure cannot go on (an instrument failed or gave an impossible reading)."""


@dataclass
class Progress:
    """Where a run is: the share done, bench seconds to go, and the latest sample if any."""

    fraction: float
    eta_s: float
    message: str
    sample: dict[str, Any] | None = None


@dataclass
class CalibrationBench:
    """A hal :class:`Bench` with a clock, a way to let time pass, and a progress reporter."""

    bench: Bench
    now_s: Callable[[], float]
    wait_fn: Callable[[float], None]
    ul_per_step: float
    """µL per microstep a procedure converts volumes and rates with (the calibration in force)."""
    syringe_ul: float | None = None
    """What the syringe holds at the start (None: unknown, not checked)."""
    time_compression: float = 1.0
    """Patient seconds per bench second on this rig (for patient-time figures)."""
    progress_fn: ProgressFn = lambda _progress: None
    _started_s: float = field(default=0.0, init=False)
    _planned_s: float = field(default=1.0, init=False)

    # -- time and progress ---------------------------------------------------------------------

    def begin(self, planned_s: float) -> None:
        """A run of about *planned_s* bench seconds starts now (for progress and ETA)."""
        self._started_s = self.now_s()
        self._planned_s = max(planned_s, 1e-9)

    def elapsed_s(self) -> float:
        return self.now_s() - self._started_s

    def result_fields(self, temperature_c: float, density_g_per_ml: float) -> dict[str, Any]:
        """What every procedure's result states about its run: the µL per step nominal and in
        force, the water's temperature and density, and the bench time it took."""
        return {
            "ul_per_step_nominal": self.bench.config.ul_per_microstep,
            "ul_per_step_in_force": self.ul_per_step,
            "temperature_c": temperature_c,
            "density_g_per_ml": density_g_per_ml,
            "bench_s": self.elapsed_s(),
        }

    def report(self, message: str, sample: dict[str, Any] | None = None) -> None:
        elapsed_s = self.elapsed_s()
        fraction = min(1.0, elapsed_s / self._planned_s)
        eta_s = max(0.0, self._planned_s - elapsed_s)
        self.progress_fn(Progress(fraction, eta_s, message, sample))

    def wait(self, seconds: float) -> None:
        """Let *seconds* of bench time pass (the stepper keeps running meanwhile)."""
        if seconds > 0:
            self.wait_fn(seconds)

    def require_volume(self, volume_ul: float, what: str) -> None:
        """Refuse a run that needs more than the syringe holds."""
        if self.syringe_ul is not None and volume_ul > self.syringe_ul:
            raise InputError(
                f"{what} needs {volume_ul / 1000:.2f} mL and the syringe holds "
                f"{self.syringe_ul / 1000:.2f} mL: lower the rate or the duration, or refill"
            )

    def check_not_empty(self) -> None:
        if self.bench.limits.at_empty:
            raise CalibrationError("the syringe ran empty (empty limit switch) during the run")

    # -- the drive ------------------------------------------------------------------------------

    @property
    def steps_issued(self) -> int:
        return self.bench.stepper.steps_issued

    def steps_per_s(self, rate_ul_per_min: float) -> float:
        return rate_ul_per_min / 60.0 / self.ul_per_step

    def run_at(self, rate_ul_per_min: float) -> None:
        """Infuse continuously at *rate_ul_per_min* (by the µL per step in force)."""
        self.bench.drive.energise()
        self.bench.stepper.set_rate(self.steps_per_s(rate_ul_per_min))

    def move(self, steps: int, rate_ul_per_min: float) -> None:
        """Infuse exactly *steps* microsteps at *rate_ul_per_min* and wait for the end."""
        stepper = self.bench.stepper
        steps_per_s = self.steps_per_s(rate_ul_per_min)
        self.bench.drive.energise()
        stepper.move(steps, steps_per_s)
        remaining_s = steps / steps_per_s
        self.wait(remaining_s)
        while not stepper.wait_move(0):
            self.wait(MOVE_POLL_S)
        self.stop()

    def stop(self) -> None:
        """Stop the pulses, then release the driver."""
        self.bench.stepper.stop()
        self.bench.drive.release()

    def pinch(self, closed: bool) -> None:
        valve = self.bench.pinch_valve
        if valve is None:
            raise CalibrationError(
                "this bench has no pinch valve ([pins] pinch_valve): the occlusion test needs one"
            )
        valve.on() if closed else valve.off()

    def make_safe(self) -> None:
        """After a run, finished or not: motor stopped and released, catheter open."""
        self.stop()
        if self.bench.pinch_valve is not None:
            self.bench.pinch_valve.off()

    # -- the instruments ------------------------------------------------------------------------

    def _balance(self):
        balance = self.bench.balance
        if balance is None:
            raise CalibrationError(
                "this procedure weighs on the balance, and none is fitted ([balance] enabled)"
            )
        return balance

    def tare(self) -> None:
        self._balance().tare()

    def stable_mass_g(self) -> float:
        return self._balance().read_stable().mass_g

    def mass_g(self) -> float:
        """The balance's immediate weight (while the pump runs)."""
        return self._balance().read_immediate().mass_g

    def flow(self) -> FlowReading:
        return self.bench.flow_sensor.read()

    def mean_sensor_flow_ul_per_min(self, seconds: float, samples: int = 20) -> float:
        """Mean of *samples* flow readings spread over *seconds*."""
        total = 0.0
        for _ in range(samples):
            self.wait(seconds / samples)
            total += self.flow().flow_ul_per_min
        return total / samples

    def water(self, entered_c: float | None) -> tuple[float, float]:
        """Water temperature (entered, else the flow sensor's) and the density at it."""
        temperature_c = self.water_temperature_c() if entered_c is None else entered_c
        return temperature_c, water_density_g_per_ml(temperature_c)

    def water_temperature_c(self) -> float:
        """The liquid temperature the flow sensor reports."""
        temperature_c = self.flow().temperature_c
        if not math.isfinite(temperature_c):
            raise CalibrationError(f"the flow sensor reported a temperature of {temperature_c}")
        return temperature_c
