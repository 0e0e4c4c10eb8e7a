"""One way to build the bench from a config: real pins and instruments on a Pi, simulated elsewhere.

The rest of the software sees a :class:`Bench` and never asks which kind it got, except to reach
the simulated bench's fault hooks (``bench.sim``), which exist only in simulation.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from gpiozero import Factory

from hal.balance import BalanceError, MtSicsBalance
from hal.config import HardwareConfig
from hal.devices import (
    AlarmBuzzer,
    EmergencyStop,
    LeakValve,
    LimitSwitches,
    PinchValve,
    RefillValve,
    StatusLed,
    SyringeDrive,
)
from hal.flow_sensor import (
    AbsentFlowSensor,
    FlowSensor,
    FlowSensorError,
    Sf06FlowSensor,
    open_flow_sensor,
)
from hal.pins import HalKind, default_hal_kind, make_pin_factory
from hal.sim.balance import SimulatedBalance
from hal.sim.bench import Clock, SimulatedBench
from hal.sim.flow_sensor import SimulatedSlf3s, sim_i2c_channel
from hal.stepgen import LgpioStepGenerator, SoftwareStepGenerator, StepGenerator


class HalUnavailable(RuntimeError):
    """The requested hardware layer cannot be built on this machine."""


@dataclass
class SimulatedInstruments:
    """What exists only on the simulated bench: the physics and the instruments' device models."""

    bench: SimulatedBench
    flow_sensor: SimulatedSlf3s
    balance: SimulatedBalance | None


@dataclass
class Bench:
    """Every device of the rig, built over one pin factory."""

    kind: HalKind
    config: HardwareConfig
    pin_factory: Factory
    drive: SyringeDrive
    stepper: StepGenerator
    limits: LimitSwitches
    estop: EmergencyStop
    buzzer: AlarmBuzzer
    led: StatusLed
    pinch_valve: PinchValve | None
    leak_valve: LeakValve | None
    refill_valve: RefillValve | None
    flow_sensor: FlowSensor
    balance: MtSicsBalance | None
    sim: SimulatedInstruments | None = None
    balance_error: str | None = None
    """Why an enabled balance is missing (its port could not be opened), else None."""
    calibrated_ul_per_microstep: float | None = None
    """µL per microstep from the volume calibration in force (None: the nominal geometry)."""
    _closers: ExitStack = field(default_factory=ExitStack, repr=False)

    @property
    def ul_per_microstep(self) -> float:
        """The one source of µL per microstep: the calibration in force, else nominal geometry."""
        return self.calibrated_ul_per_microstep or self.config.ul_per_microstep

    def close(self) -> None:
        """Stop the stepper, release the motor and close every device (last built, first closed)."""
        self._closers.close()


def build_bench(
    config: HardwareConfig,
    hal: HalKind | None = None,
    *,
    clock: Clock | None = None,
    start_stepper: bool = True,
) -> Bench:
    """Build the bench of *hal* kind (default: ``gpio`` on a Raspberry Pi, ``sim`` elsewhere).

    *clock* (simulation only) drives the bench physics, the step generator and the instruments;
    with a virtual clock, leave *start_stepper* False and advance with ``stepper.run_until``.
    """
    kind: HalKind = hal or default_hal_kind()
    if kind == "gpio" and clock is not None:
        raise ValueError("a supplied clock is only possible on the simulated bench (--hal sim)")
    try:
        factory = make_pin_factory(kind)
    except (ImportError, OSError, RuntimeError) as error:
        raise HalUnavailable(
            f"cannot open the Pi's GPIO ({error}); on a machine without Pi hardware use --hal sim"
        ) from error
    pins = config.pins
    with ExitStack() as stack:
        drive = SyringeDrive.from_config(pins, config.drive, pin_factory=factory)
        stack.callback(drive.close)
        stack.callback(drive.release)
        limits = LimitSwitches(pins.limit_full, pins.limit_empty, pin_factory=factory)
        stack.callback(limits.close)
        estop = EmergencyStop(pins.estop, pin_factory=factory)
        stack.callback(estop.close)
        buzzer = AlarmBuzzer(pins.buzzer, pin_factory=factory)
        stack.callback(buzzer.close)
        led = StatusLed(pins.led_red, pins.led_green, pins.led_blue, pin_factory=factory)
        stack.callback(led.close)
        pinch_valve = leak_valve = None
        if pins.pinch_valve is not None:
            pinch_valve = PinchValve(pins.pinch_valve, pin_factory=factory)
            stack.callback(pinch_valve.close)
        if pins.leak_valve is not None:
            leak_valve = LeakValve(pins.leak_valve, pin_factory=factory)
            stack.callback(leak_valve.close)
        refill_valve = None
        if pins.refill_valve is not None:
            refill_valve = RefillValve(pins.refill_valve, pin_factory=factory)
            stack.callback(refill_valve.close)

        sim: SimulatedInstruments | None = None
        balance: MtSicsBalance | None = None
        balance_error: str | None = None
        if kind == "sim":
            sim_clock = clock or time.monotonic
            sim = _build_simulated_instruments(config, factory, sim_clock, stack)
            flow_sensor: FlowSensor = Sf06FlowSensor(sim_i2c_channel(sim.flow_sensor))
            if sim.balance is not None:
                balance = MtSicsBalance(
                    sim.balance.port, baud=config.balance.baud, timeout_s=config.balance.timeout_s
                )
        else:
            # A missing instrument must not keep the rig from starting: the self-test names it
            # and the service raises its alarm.
            try:
                flow_sensor = open_flow_sensor(config.flow_sensor)
            except FlowSensorError as error:
                flow_sensor = AbsentFlowSensor(str(error))
            if config.balance.enabled:
                try:
                    balance = MtSicsBalance.from_config(config.balance)
                except BalanceError as error:
                    balance_error = str(error)
        stack.callback(flow_sensor.close)
        if balance is not None:
            stack.callback(balance.close)

        stepper = _build_stepper(kind, drive, clock, config)
        stack.callback(stepper.close)
        if start_stepper and isinstance(stepper, SoftwareStepGenerator):
            stepper.start()
        bench = Bench(
            kind=kind,
            config=config,
            pin_factory=factory,
            drive=drive,
            stepper=stepper,
            limits=limits,
            estop=estop,
            buzzer=buzzer,
            led=led,
            pinch_valve=pinch_valve,
            leak_valve=leak_valve,
            refill_valve=refill_valve,
            flow_sensor=flow_sensor,
            balance=balance,
            sim=sim,
            balance_error=balance_error,
        )
        bench._closers = stack.pop_all()
    if kind == "sim":
        factory_reset = getattr(factory, "reset", None)
        if factory_reset is not None:
            bench._closers.callback(factory_reset)
    return bench


def _build_simulated_instruments(
    config: HardwareConfig, factory: Factory, clock: Clock, stack: ExitStack
) -> SimulatedInstruments:
    sim_config = config.sim
    physics = SimulatedBench(config, factory, clock=clock)
    stack.callback(physics.close)
    sensor = SimulatedSlf3s(
        physics.sensor_flow_ul_per_min,
        clock=clock,
        noise_ul_per_min=sim_config.sensor_noise_ul_per_min,
        offset_ul_per_min=sim_config.sensor_offset_ul_per_min,
        time_constant_s=sim_config.sensor_time_constant_s,
        temperature_c=sim_config.water_temperature_c,
        air_in_line=physics.air_in_line,
        air_in_line_since=physics.air_in_line_since,
        seed=sim_config.seed,
    )
    balance = None
    if config.balance.enabled:
        balance = SimulatedBalance(
            physics.outlet_mass_g,
            noise_g=sim_config.balance_noise_g,
            clock=clock,
            baud=config.balance.baud,
            sir_rate_hz=sim_config.balance_sir_rate_hz,
            readability_g=sim_config.balance_readability_g,
            drift_g_per_h=sim_config.balance_drift_g_per_h,
            evaporation_mg_per_h=sim_config.balance_evaporation_mg_per_h,
            seed=None if sim_config.seed is None else sim_config.seed + 1,
        )
        balance.start()
        stack.callback(balance.close)
    return SimulatedInstruments(bench=physics, flow_sensor=sensor, balance=balance)


def _build_stepper(
    kind: HalKind, drive: SyringeDrive, clock: Clock | None, config: HardwareConfig
) -> StepGenerator:
    """lgpio's pulse trains where the pins are lgpio's, else the Python step thread.

    Both are software-timed: lgpio's trains by a thread in its C library (free of the GIL), the
    other by a Python thread; neither uses a hardware timer or DMA.
    """
    drive_config = config.drive
    max_rate = drive_config.max_rate_steps_per_s
    if kind == "gpio" and type(drive.pin_factory).__name__ == "LGPIOFactory":
        return LgpioStepGenerator(
            drive, pulse_us=drive_config.step_pulse_us, max_rate_steps_per_s=max_rate
        )
    return SoftwareStepGenerator(
        drive,
        clock=clock or time.monotonic,  # the service's bench clock: step times come from it
        spin_s=drive_config.step_spin_us / 1e6,
        max_rate_steps_per_s=max_rate,
    )
