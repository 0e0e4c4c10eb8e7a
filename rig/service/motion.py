"""The motor follows the delivery plan: one truth for what moves and what the books say.

Step *m* of the motor is due at the patient moment when the plan's cumulative volume has gone
*m* steps' volume past where it stood when the motor's count began; the patient clock, paced
within the bench's limits, turns that moment into a bench instant. A bolus or a flex step
therefore ends on its exact step, whatever the loop is doing, and the engine's books (the plan's
integral) and the ledger (the steps the motor issued) agree to within a step.

The driver is powered only while steps are due (ENABLE released otherwise), and a stop releases
the driver before it stops the pulses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.bench import Bench
from hal.config import HardwareConfig
from hal.flow_sensor import SLF3S_0600F_FULL_SCALE_UL_PER_MIN
from hal.stepgen import StepRun
from rig.therapy.clocks import PacedClock
from rig.therapy.engine import TherapyEngine
from rig.therapy.plan import STEP_TOLERANCE, DeliveryPlan
from rig.therapy.units import SECONDS_PER_MINUTE, ul_per_min

ENABLE_LEAD_S = 0.2
"""The driver is powered this long before a step is due (the DRV8825 wakes in 1.7 ms)."""
SENSOR_USABLE_FRACTION = 0.8
"""Bench flow kept below this fraction of the flow sensor's full scale."""


@dataclass(frozen=True)
class BenchLimits:
    """The most the bench may move, in µL/min: drive, flow sensor, configured."""

    drive_ul_per_min: float
    sensor_ul_per_min: float
    configured_ul_per_min: float | None = None

    @classmethod
    def from_config(
        cls,
        config: HardwareConfig,
        configured_ul_per_min: float | None = None,
        ul_per_step: float | None = None,
    ) -> BenchLimits:
        """Limits of *config*'s bench at *ul_per_step* (default: the nominal geometry's)."""
        step_ul = ul_per_step or config.ul_per_microstep
        return cls(
            drive_ul_per_min=ul_per_min(config.drive.max_rate_steps_per_s, step_ul),
            sensor_ul_per_min=SLF3S_0600F_FULL_SCALE_UL_PER_MIN * SENSOR_USABLE_FRACTION,
            configured_ul_per_min=configured_ul_per_min,
        )

    def _named(self) -> list[tuple[float, str]]:
        named = [
            (self.drive_ul_per_min, "the drive's maximum step rate"),
            (
                self.sensor_ul_per_min,
                f"the flow sensor's range ({SENSOR_USABLE_FRACTION:.0%} of "
                f"{SLF3S_0600F_FULL_SCALE_UL_PER_MIN:g} µL/min)",
            ),
        ]
        if self.configured_ul_per_min is not None:
            named.append((self.configured_ul_per_min, "the configured maximum bench flow"))
        return named

    @property
    def max_ul_per_min(self) -> float:
        return min(limit for limit, _name in self._named())

    @property
    def limiting(self) -> str:
        """What sets :attr:`max_ul_per_min`, in words."""
        return min(self._named())[1]


class PlanStepTargets:
    """Step times from a delivery plan: step *m* is due when the plan's cumulative volume
    reaches ``base_ul + m × ul_per_step``; bench instants from the paced patient clock."""

    def __init__(
        self, plan: DeliveryPlan, clock: PacedClock, ul_per_step: float, base_ul: float
    ) -> None:
        self.plan = plan
        self.clock = clock
        self.ul_per_step = ul_per_step
        self.base_ul = base_ul

    def step_of_volume(self, volume_ul: float) -> int:
        """The last whole step done once the plan has delivered *volume_ul* from its origin."""
        return math.floor((volume_ul - self.base_ul) / self.ul_per_step + STEP_TOLERANCE)

    def run_from(self, step: int) -> StepRun | None:
        plan = self.plan
        due = plan.time_at_cumulative_ul(self.base_ul + (step - STEP_TOLERANCE) * self.ul_per_step)
        if due is None:
            return None
        first_due_s = self.clock.bench_at(due)
        rate_ul_per_h = plan.rate_ul_per_h(due)
        if rate_ul_per_h <= 0:
            return StepRun(step, step, first_due_s, 0.0)
        change = plan.next_change_after(due)
        last = None
        if change is not None:
            last = max(step, self.step_of_volume(plan.cumulative_volume_ul(change)))
        patient_period_s = self.ul_per_step / rate_ul_per_h * 3600.0
        return StepRun(step, last, first_due_s, patient_period_s / self.clock.factor_at(due))


class Motion:
    """The syringe drive under the plan: follow, power, stop."""

    def __init__(self, bench: Bench, clock: PacedClock, engine: TherapyEngine) -> None:
        self.bench = bench
        self.clock = clock
        self.ul_per_step = bench.ul_per_microstep
        self.zero_ul = engine.state.delivered_ul - bench.stepper.steps_issued * self.ul_per_step
        """The books' delivered volume at which the motor's count was zero."""
        self.targets: PlanStepTargets | None = None
        self._followed: tuple[DeliveryPlan, float] | None = None

    def follow(self, engine: TherapyEngine) -> None:
        """Follow the engine's plan in force (a new plan, a new nominal factor, or a stop)."""
        plan, state = engine.plan, engine.state
        key = (plan, self.clock.time_compression_nominal)
        if self._followed == key:
            return
        self._followed = key
        if state.halted:
            self.stop()
            return
        base_ul = plan.cumulative_volume_ul(state.updated_at) - (state.delivered_ul - self.zero_ul)
        self.targets = PlanStepTargets(plan, self.clock, self.ul_per_step, base_ul)
        self.bench.stepper.follow(self.targets)

    def stop(self) -> None:
        """Release the driver, then stop the pulses: nothing can move after this."""
        self.bench.drive.release()
        self.bench.stepper.stop()
        self.targets = None

    def forget(self) -> None:
        """Follow the plan afresh at the next :meth:`follow` (after a stop from outside)."""
        self._followed = None

    def power(self, now_s: float) -> None:
        """ENABLE asserted only while a step is due within :data:`ENABLE_LEAD_S`."""
        due_s = self.bench.stepper.next_due_s()
        if due_s is not None and due_s - now_s <= ENABLE_LEAD_S:
            self.bench.drive.energise()
        elif due_s is None or due_s - now_s > 2 * ENABLE_LEAD_S:
            self.bench.drive.release()

    def target_steps(self, engine: TherapyEngine) -> int:
        """Steps the motor should have issued by the engine's last accounting."""
        return math.floor(
            (engine.state.delivered_ul - self.zero_ul) / self.ul_per_step + STEP_TOLERANCE
        )

    @property
    def steps_per_s(self) -> float:
        return self.bench.stepper.rate_steps_per_s

    @property
    def bench_ul_per_min(self) -> float:
        return ul_per_min(self.steps_per_s, self.ul_per_step)

    @property
    def bench_ul_per_s(self) -> float:
        return self.bench_ul_per_min / SECONDS_PER_MINUTE
