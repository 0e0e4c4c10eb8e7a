"""The simulated bench: the physics under the mock pins.

A :class:`SimulatedBench` watches the STEP, DIR, ENABLE and microstep-select pins of a
MockFactory exactly as a stepper driver board would, moves a modelled plunger, and drives the
limit-switch pins from the plunger position. Fluid leaves the syringe into tubing with compliance
(it stores volume as pressure rises), passes the flow sensor and leaves through the catheter's
resistance into a beaker on the balance::

    syringe ──► tubing (compliance C) ──┬──► flow sensor ──► catheter (R) ──► beaker on balance
                                        └──► leak (R_leak) ──► waste

The line volume obeys dV/dt = q_in − V·G/C, with G the total conductance; between steps it is
solved exactly (exponential decay with τ = C/G), and every step adds its volume at once. So flow
lags steps as on the real line, and occlusion, leaks, stalls and slipping are physical causes the
controller can only see through the sensor, the balance and the limit switches.

Every quantity is computed from the supplied clock, so the bench runs in real time or, under a
virtual clock, as fast as the machine can go.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Annotated

from gpiozero.pins.mock import MockFactory
from pydantic import Field, ValidationError

from hal.config import Fraction, HardwareConfig, NonNegativeFloat, StrictModel
from hal.devices import MICROSTEP_TABLES

Clock = Callable[[], float]

PINCH_VALVE_OCCLUSION = 0.98
"""Occlusion of the catheter while the pinch valve is energised (a kink, not a perfect seal)."""

LEAK_VALVE_FRACTION = 0.5
"""Share of the line flow that escapes while the leak valve is open."""

STALL_PRESSURE_KPA = 300.0
"""Line pressure above which the motor can no longer push the plunger and skips steps."""

UL_PER_MIN_PER_UL_PER_S = 60.0


LeakFraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
"""A leak can take any share of the flow but all of it (the line would hold no pressure)."""


class BenchFaults(StrictModel):
    """Physical faults of the simulated bench, each a cause the controller cannot read directly."""

    occlusion_fraction: Fraction = 0.0
    """Catheter occlusion: 0 open, 1 fully blocked (its conductance scales by 1 − fraction)."""
    leak_fraction: LeakFraction = 0.0
    """Share of the line flow escaping through a leak upstream of the sensor (at steady state)."""
    motor_stalled: bool = False
    """The rotor does not turn: steps are issued but the plunger stays put."""
    slip_fraction: Fraction = 0.0
    """Share of steps lost in a slipping coupling or lead-screw nut."""
    free_flow_ul_per_min: NonNegativeFloat = 0.0
    """Free flow past a failed plunger seal: the reservoir drains into the line without a step."""
    spurious_steps_per_s: NonNegativeFloat = 0.0
    """Electrical noise on the STEP line that the driver takes for steps (a runaway motor)."""
    driver_microstepping: Annotated[int, Field(strict=True)] | None = None
    """Microstepping the driver really uses when its mode jumpers are mis-set (None: the pins)."""
    short_fill_fraction: Fraction = 0.0
    """Share of what a refill draws that is air (a supply run dry, a loose connection); the air
    reaches the line when delivery resumes."""


class SimulatedBench:
    """Plunger, syringe, tubing, catheter and beaker, driven by the mock stepper pins."""

    def __init__(
        self, config: HardwareConfig, factory: MockFactory, *, clock: Clock = time.monotonic
    ) -> None:
        self._config = config
        self._factory = factory
        self._clock = clock
        self._lock = threading.RLock()
        pins = config.pins
        syringe = config.syringe
        drive = config.drive
        full_steps_per_mm = drive.steps_per_rev / drive.lead_screw_pitch_mm
        # Positions follow the barrel's graduations (nominal bore); fluid moves by the true bore.
        self._nominal_ul_per_full_step = syringe.ul_per_mm / full_steps_per_mm
        true_radius_mm = config.sim_inner_diameter_mm / 2
        self._ul_per_full_step = math.pi * true_radius_mm * true_radius_mm / full_steps_per_mm
        self._stroke_full_steps = syringe.stroke_mm * full_steps_per_mm
        self._mm_per_full_step = 1.0 / full_steps_per_mm
        self._backlash_full_steps = config.sim.backlash_mm * full_steps_per_mm
        self._slack_full_steps = 0.0  # backlash still to take up in the current direction
        self._last_direction = -1.0  # as left by the last fill: withdrawing
        self._last_infuse_s = -math.inf
        self._stick_accumulator = 0.0
        # Plunger position in full steps from the fully withdrawn (full) end.
        empty_ml = syringe.nominal_volume_ml - config.sim.initial_fill_ml
        self._plunger_full_steps = empty_ml * 1000.0 / self._nominal_ul_per_full_step
        self._line_ul = 0.0
        self._outlet_ul = 0.0
        self._leaked_ul = 0.0
        self._air_remaining_ul = 0.0
        self._air_seen_s = -math.inf  # last time air was at the sensor
        self._slip_accumulator = 0.0
        self._seal_loss_ul = 0.0
        self._steps_seen = 0
        self._steps_moved = 0
        self._now_s = clock()
        self.faults = BenchFaults()
        self._pin_levels: dict[int, float] = {}
        self._limit_pins = (pins.limit_full, pins.limit_empty)
        self._estop_pin = pins.estop
        self._step_pin = pins.step
        self._dir_pin = pins.dir
        self._enable_pin = pins.enable
        self._microstep_pins = tuple(pins.microstep)
        self._valve_pins = (pins.pinch_valve, pins.leak_valve)
        self._refill_valve_pin = pins.refill_valve
        self._waste_ul = 0.0
        self._syringe_air_ul = 0.0
        self._listeners: list[tuple[int, Callable[[float], None]]] = []
        watched = (*self._microstep_pins, *self._valve_pins, self._refill_valve_pin)
        for number in (self._dir_pin, self._enable_pin, *watched):
            if number is not None:
                self._watch(number, self._level_listener(number))
        self._watch(self._step_pin, self._on_step_edge)
        self._pins_microstepping = self._microstepping_from_pins()
        self._switch_pins = tuple(factory.pin(n) for n in self._limit_pins)
        self._switch_states: tuple[bool, bool] | None = None
        self.update_switches()

    # -- wiring -------------------------------------------------------------------------------

    def _watch(self, number: int, listener: Callable[[float], None]) -> None:
        pin = self._factory.pin(number)
        pin.add_listener(listener)
        self._pin_levels[number] = float(pin.state)
        self._listeners.append((number, listener))

    def _level_listener(self, number: int) -> Callable[[float], None]:
        def remember(state: float) -> None:
            with self._lock:
                self._advance(self._clock())
                self._pin_levels[number] = state
                self._pins_microstepping = self._microstepping_from_pins()

        return remember

    def close(self) -> None:
        """Stop watching the pins."""
        for number, listener in self._listeners:
            pin = self._factory.pin(number)
            if listener in pin._listeners:
                pin.remove_listener(listener)
        self._listeners.clear()

    # -- faults -------------------------------------------------------------------------------

    def check_faults(self, **changes: object) -> BenchFaults:
        """The fault settings *changes* would give, checked as a whole; nothing is applied."""
        try:
            faults = BenchFaults.model_validate({**self.faults.model_dump(), **changes})
        except ValidationError as error:
            raise ValueError(str(error)) from None
        if faults.driver_microstepping is not None:
            allowed = MICROSTEP_TABLES[self._config.drive.driver]
            if faults.driver_microstepping not in allowed:
                raise ValueError(
                    f"driver_microstepping must be one of {sorted(allowed)} "
                    f"for the {self._config.drive.driver}"
                )
        return faults

    def inject(self, **changes: object) -> BenchFaults:
        """Change fault settings (validated as a whole; nothing changes if any value is bad)."""
        with self._lock:
            self._advance(self._clock())
            faults = self.check_faults(**changes)
            self.faults = faults
            return faults

    def clear_faults(self) -> None:
        with self._lock:
            self._advance(self._clock())
            self.faults = BenchFaults()
            if self._air_remaining_ul > 0:
                self._air_seen_s = self._now_s
            self._air_remaining_ul = 0.0

    def inject_air_bubble(self, volume_ul: float) -> None:
        """Send a bubble of *volume_ul* down the line: the sensor flags air while it passes."""
        if not math.isfinite(volume_ul) or volume_ul <= 0:
            raise ValueError(f"volume_ul must be a finite number > 0, not {volume_ul!r}")
        with self._lock:
            self._advance(self._clock())
            self._air_remaining_ul += volume_ul

    def press_estop(self, pressed: bool = True) -> None:
        """Push (or release) the emergency-stop button."""
        pin = self._factory.pin(self._estop_pin)
        pin.drive_low() if pressed else pin.drive_high()

    # -- the driver board ---------------------------------------------------------------------

    def _microstepping(self) -> int:
        """Microstepping the driver applies: its mode pins, unless the jumpers override them."""
        if self.faults.driver_microstepping is not None:
            return self.faults.driver_microstepping
        return self._pins_microstepping

    def _microstepping_from_pins(self) -> int:
        levels = tuple(int(self._pin_levels[n] > 0.5) for n in self._microstep_pins)
        for microstepping, table_levels in MICROSTEP_TABLES[self._config.drive.driver].items():
            if table_levels == levels:
                return microstepping
        return 1

    def _on_step_edge(self, state: float) -> None:
        if state < 0.5:
            return
        with self._lock:
            now_s = self._clock()
            self._advance(now_s)
            self._steps_seen += 1
            if self._pin_levels[self._enable_pin] > 0.5:  # ENABLE is active low
                return
            direction = 1.0 if self._pin_levels[self._dir_pin] > 0.5 else -1.0
            full_steps = direction / self._microstepping()
            if self._lost_in_drive_train(full_steps, now_s):
                return
            self._move_plunger(full_steps)

    def _lost_in_drive_train(self, full_steps: float, now_s: float) -> bool:
        """True if backlash or stick-slip swallows this step before it reaches the plunger."""
        sim = self._config.sim
        direction = math.copysign(1.0, full_steps)
        if direction != self._last_direction:
            self._last_direction = direction
            self._slack_full_steps = self._backlash_full_steps
        if self._slack_full_steps > 0:
            self._slack_full_steps = max(0.0, self._slack_full_steps - abs(full_steps))
            return True
        if direction < 0 or sim.stick_slip_loss_fraction <= 0:
            return False
        interval_s, self._last_infuse_s = now_s - self._last_infuse_s, now_s
        speed_mm_per_min = abs(full_steps) * self._mm_per_full_step / interval_s * 60.0
        if speed_mm_per_min >= sim.stick_slip_speed_mm_per_min:
            return False
        slowness = 1.0 - speed_mm_per_min / sim.stick_slip_speed_mm_per_min
        self._stick_accumulator += sim.stick_slip_loss_fraction * slowness
        if self._stick_accumulator >= 1.0:
            self._stick_accumulator -= 1.0
            return True
        return False

    def _move_plunger(self, full_steps: float) -> None:
        """Move the plunger by *full_steps* (signed; + pushes fluid out) if physics lets it."""
        faults = self.faults
        if faults.motor_stalled:
            return
        if full_steps > 0 and self.line_pressure_kpa >= STALL_PRESSURE_KPA:
            return
        if faults.slip_fraction > 0:
            self._slip_accumulator += faults.slip_fraction
            if self._slip_accumulator >= 1.0:
                self._slip_accumulator -= 1.0
                return
        target = min(max(self._plunger_full_steps + full_steps, 0.0), self._stroke_full_steps)
        moved = target - self._plunger_full_steps
        if moved == 0:
            return
        self._plunger_full_steps = target
        self._steps_moved += 1
        moved_ul = moved * self._ul_per_full_step
        if self._refill_port_open():
            if moved_ul > 0:
                self._waste_ul += moved_ul  # pushed out through the refill port to waste
            else:
                self._syringe_air_ul += -moved_ul * self.faults.short_fill_fraction
            self.update_switches()
            return
        if moved_ul > 0 and self._syringe_air_ul > 0:
            air_ul = min(self._syringe_air_ul, moved_ul)  # air at the outlet leaves first
            self._syringe_air_ul -= air_ul
            self._air_remaining_ul += air_ul
        self._line_ul += moved_ul
        if self._line_ul < 0:
            # Withdrawing pulls fluid back from the line: the line empties, nothing flows back out.
            self._line_ul = 0.0
        self.update_switches()

    def _refill_port_open(self) -> bool:
        pin = self._refill_valve_pin
        return pin is not None and self._pin_levels.get(pin, 0.0) > 0.5

    def update_switches(self, *, force: bool = False) -> None:
        """Drive the limit-switch pins from the plunger position (switches close to GND)."""
        states = (
            self._plunger_full_steps <= 0.0,
            self._plunger_full_steps >= self._stroke_full_steps,
        )
        if states == self._switch_states and not force:
            return
        self._switch_states = states
        for pin, closed in zip(self._switch_pins, states, strict=True):
            if pin.function != "input":
                continue
            if closed and pin.state:
                pin.drive_low()
            elif not closed and not pin.state:
                pin.drive_high()

    # -- the fluid line -----------------------------------------------------------------------

    def _conductances(self) -> tuple[float, float]:
        """Catheter and leak conductance in µL/(kPa·min), valves and faults included."""
        sim = self._config.sim
        faults = self.faults
        occlusion = faults.occlusion_fraction
        leak = faults.leak_fraction
        pinch_pin, leak_pin = self._valve_pins
        if pinch_pin is not None and self._pin_levels.get(pinch_pin, 0.0) > 0.5:
            occlusion = max(occlusion, PINCH_VALVE_OCCLUSION)
        if leak_pin is not None and self._pin_levels.get(leak_pin, 0.0) > 0.5:
            leak = max(leak, LEAK_VALVE_FRACTION)
        catheter = (1.0 - occlusion) / sim.catheter_resistance_kpa_min_per_ul
        # A leak taking fraction f of an unoccluded line's flow: G_leak = G_open · f / (1 − f).
        leak_conductance = leak / (1.0 - leak) / sim.catheter_resistance_kpa_min_per_ul
        return catheter, leak_conductance

    def _runaway_ul_per_min(self) -> float:
        """Plunger drive by noise steps: only while the driver is enabled and the rotor turns."""
        faults = self.faults
        if (
            faults.spurious_steps_per_s <= 0
            or faults.motor_stalled
            or self._pin_levels[self._enable_pin] > 0.5
        ):
            return 0.0
        full_steps_per_s = faults.spurious_steps_per_s / self._microstepping()
        return full_steps_per_s * self._ul_per_full_step * UL_PER_MIN_PER_UL_PER_S

    def _advance(self, now_s: float) -> None:
        """Integrate the line exactly from the last update to *now_s*."""
        dt_min = (now_s - self._now_s) / 60.0
        if dt_min <= 0:
            return
        self._now_s = now_s
        inflow_ul = 0.0
        runaway_ul_per_min = self._runaway_ul_per_min()
        if runaway_ul_per_min > 0:
            room_ul = (self._stroke_full_steps - self._plunger_full_steps) * self._ul_per_full_step
            runaway_ul = min(runaway_ul_per_min * dt_min, room_ul)
            self._plunger_full_steps += runaway_ul / self._ul_per_full_step
            inflow_ul += runaway_ul
            self.update_switches()
        if self.faults.free_flow_ul_per_min > 0:
            siphon_ul = min(self.faults.free_flow_ul_per_min * dt_min, self._syringe_ul())
            self._seal_loss_ul += siphon_ul
            inflow_ul += siphon_ul
        inflow = inflow_ul / dt_min
        catheter, leak = self._conductances()
        conductance = catheter + leak
        compliance = self._config.sim.tubing_compliance_ul_per_kpa
        line_before = self._line_ul
        if conductance <= 0:
            self._line_ul = line_before + inflow * dt_min
            return
        steady_ul = inflow * compliance / conductance
        decay = math.exp(-dt_min * conductance / compliance)
        self._line_ul = steady_ul + (line_before - steady_ul) * decay
        outflow_ul = line_before + inflow * dt_min - self._line_ul
        catheter_ul = outflow_ul * catheter / conductance
        self._outlet_ul += catheter_ul
        self._leaked_ul += outflow_ul - catheter_ul
        if self._air_remaining_ul > 0:
            self._air_seen_s = now_s  # the bubble was at the sensor during this interval
            self._air_remaining_ul = max(0.0, self._air_remaining_ul - catheter_ul)

    # -- what the instruments and tests see ----------------------------------------------------

    def _now(self) -> None:
        self._advance(self._clock())

    @property
    def line_pressure_kpa(self) -> float:
        return self._line_ul / self._config.sim.tubing_compliance_ul_per_kpa

    def sensor_flow_ul_per_min(self) -> float:
        """True flow through the sensor (into the catheter) now."""
        with self._lock:
            self._now()
            catheter, _ = self._conductances()
            return self.line_pressure_kpa * catheter

    def air_in_line(self) -> bool:
        """True while an air bubble is passing the sensor."""
        with self._lock:
            self._now()
            return self._air_remaining_ul > 0

    def air_in_line_since(self, since_s: float) -> bool:
        """True if an air bubble was at the sensor at any time after *since_s* (clock seconds)."""
        with self._lock:
            self._now()
            return self._air_remaining_ul > 0 or self._air_seen_s > since_s

    def outlet_mass_g(self) -> float:
        """Mass of fluid collected in the beaker on the balance."""
        with self._lock:
            self._now()
            collected_ul = self._outlet_ul + self._waste_ul  # beaker and waste cup on the balance
            return collected_ul / 1000.0 * self._config.sim.fluid_density_g_per_ml

    @property
    def plunger_travel_mm(self) -> float:
        """Plunger position from the fully withdrawn end."""
        with self._lock:
            drive = self._config.drive
            return self._plunger_full_steps * drive.lead_screw_pitch_mm / drive.steps_per_rev

    def _syringe_ul(self) -> float:
        """Liquid in the syringe (its air excluded)."""
        remaining_full_steps = self._stroke_full_steps - self._plunger_full_steps
        liquid_ul = remaining_full_steps * self._ul_per_full_step - self._seal_loss_ul
        return max(0.0, liquid_ul - self._syringe_air_ul)

    @property
    def syringe_volume_ml(self) -> float:
        """Volume left in the syringe (the reservoir)."""
        with self._lock:
            self._now()
            return self._syringe_ul() / 1000.0

    @property
    def outlet_volume_ul(self) -> float:
        with self._lock:
            self._now()
            return self._outlet_ul

    @property
    def leaked_volume_ul(self) -> float:
        with self._lock:
            self._now()
            return self._leaked_ul

    @property
    def line_volume_ul(self) -> float:
        """Volume stored in the tubing's compliance above ambient pressure."""
        with self._lock:
            self._now()
            return self._line_ul

    @property
    def steps_seen(self) -> int:
        """Rising STEP edges the driver board received (moved or not)."""
        return self._steps_seen

    @property
    def steps_moved(self) -> int:
        """STEP edges that actually moved the plunger."""
        return self._steps_moved

    def fill(self, volume_ml: float) -> None:
        """Refill the syringe by hand to *volume_ml* (plunger set back; the line is untouched)."""
        nominal_ml = self._config.syringe.nominal_volume_ml
        if not math.isfinite(volume_ml) or not 0 <= volume_ml <= nominal_ml:
            raise ValueError(f"volume_ml must be 0..{nominal_ml} mL, not {volume_ml!r}")
        with self._lock:
            self._now()
            empty_ul = (nominal_ml - volume_ml) * 1000.0
            self._plunger_full_steps = empty_ul / self._nominal_ul_per_full_step
            self._seal_loss_ul = 0.0
            self._last_direction = -1.0  # the plunger was pulled back
            self._syringe_air_ul = volume_ml * 1000.0 * self.faults.short_fill_fraction
            self.update_switches()

    @property
    def waste_ul(self) -> float:
        """What the refill port has sent to the waste cup."""
        with self._lock:
            return self._waste_ul

    @property
    def syringe_air_ul(self) -> float:
        """Air drawn in by a short fill, not yet pushed into the line."""
        with self._lock:
            return self._syringe_air_ul
