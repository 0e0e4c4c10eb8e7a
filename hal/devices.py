"""gpiozero devices of the rig: syringe drive, limit switches, emergency stop, buzzer, LED, valves.

Every device takes ``pin_factory=`` like any gpiozero device, so the same classes run on a Pi's
header (lgpio / RPi.GPIO) and on the simulated bench (MockFactory).
"""

from __future__ import annotations

import threading
from typing import ClassVar, Literal

from gpiozero import RGBLED, Button, CompositeDevice, DigitalOutputDevice, PWMOutputDevice
from gpiozero.pins import Factory

from hal.config import DriveConfig, PinsConfig

Direction = Literal["infuse", "withdraw"]

# Microstep select levels (M0, M1, M2) for each divisor, per driver datasheet.
MICROSTEP_TABLES: dict[str, dict[int, tuple[int, int, int]]] = {
    "drv8825": {
        1: (0, 0, 0),
        2: (1, 0, 0),
        4: (0, 1, 0),
        8: (1, 1, 0),
        16: (0, 0, 1),
        32: (1, 0, 1),
    },
    "a4988": {1: (0, 0, 0), 2: (1, 0, 0), 4: (0, 1, 0), 8: (1, 1, 0), 16: (1, 1, 1)},
}


class SyringeDrive(CompositeDevice):
    """Stepper driver board pushing the syringe plunger through a lead screw.

    STEP pulses move the plunger one microstep; DIR high pushes fluid out (infuse); ENABLE is
    active low on DRV8825/A4988 boards. The drive starts disabled and pointing to infuse. Reverse
    motion (withdraw) is only ever selected by an explicit refill move, never by delivery.
    """

    def __init__(
        self,
        step_pin: int,
        dir_pin: int,
        enable_pin: int,
        microstep_pins: tuple[int, int, int],
        *,
        driver: str = "drv8825",
        microstepping: int = 32,
        pin_factory: Factory | None = None,
    ) -> None:
        if microstepping not in MICROSTEP_TABLES[driver]:
            allowed = sorted(MICROSTEP_TABLES[driver])
            raise ValueError(f"{driver} cannot microstep by {microstepping}; allowed {allowed}")
        # ENABLE first and released: the motor cannot move before anyone asks it to. It is not a
        # member of the composite, so that closing the drive leaves it driven (see close()).
        self.enable = DigitalOutputDevice(
            enable_pin, active_high=False, initial_value=False, pin_factory=pin_factory
        )
        super().__init__(
            step=DigitalOutputDevice(step_pin, pin_factory=pin_factory),
            direction=DigitalOutputDevice(dir_pin, initial_value=True, pin_factory=pin_factory),
            m0=DigitalOutputDevice(microstep_pins[0], pin_factory=pin_factory),
            m1=DigitalOutputDevice(microstep_pins[1], pin_factory=pin_factory),
            m2=DigitalOutputDevice(microstep_pins[2], pin_factory=pin_factory),
            _order=("step", "direction", "m0", "m1", "m2"),
            pin_factory=pin_factory,
        )
        for device, level in zip(
            (self.m0, self.m1, self.m2), MICROSTEP_TABLES[driver][microstepping], strict=True
        ):
            device.value = level
        self.microstepping = microstepping
        self._step_pin = self.step.pin

    @classmethod
    def from_config(
        cls, pins: PinsConfig, drive: DriveConfig, pin_factory: Factory | None = None
    ) -> SyringeDrive:
        return cls(
            pins.step,
            pins.dir,
            pins.enable,
            tuple(pins.microstep),
            driver=drive.driver,
            microstepping=drive.microstepping,
            pin_factory=pin_factory,
        )

    @property
    def is_enabled(self) -> bool:
        """True while the driver energises the motor (ENABLE pin low)."""
        return bool(self.enable.is_active)

    def energise(self) -> None:
        self.enable.on()

    def release(self) -> None:
        """De-energise the motor (ENABLE high): the plunger can no longer be driven."""
        self.enable.off()

    def close(self) -> None:
        """Close the drive with ENABLE driven to "released", never floating.

        A DRV8825 pulls a floating ENABLE low, which would energise the motor. So the ENABLE line
        stays claimed as an output at its released level until the process ends (a pull-up on
        the board holds it after that, see docs/hardware.md); :meth:`free_enable` gives it back.
        """
        if not self.enable.closed:
            self.enable.off()
        super().close()

    def free_enable(self) -> None:
        """Give the ENABLE line back (a new drive object is to take it over)."""
        self.enable.close()

    @property
    def direction_name(self) -> Direction:
        return "infuse" if self.direction.is_active else "withdraw"

    def point(self, direction: Direction) -> None:
        """Select the direction of the next steps."""
        if direction not in ("infuse", "withdraw"):
            raise ValueError(f"direction must be 'infuse' or 'withdraw', not {direction!r}")
        self.direction.value = direction == "infuse"

    def pulse(self) -> None:
        """One STEP pulse (rising edge moves the motor one microstep).

        Writes the pin directly: this is the hot path of the step generator. The pulse is as wide
        as two pin writes, several µs in Python, above the drivers' 1.9 µs minimum.
        """
        pin = self._step_pin
        pin.state = 1
        pin.state = 0


class LimitSwitches(CompositeDevice):
    """Two end-of-travel switches closing to GND: plunger fully back (full) and fully in (empty)."""

    def __init__(self, full_pin: int, empty_pin: int, *, pin_factory: Factory | None = None):
        super().__init__(
            full=Button(full_pin, pull_up=True, pin_factory=pin_factory),
            empty=Button(empty_pin, pull_up=True, pin_factory=pin_factory),
            _order=("full", "empty"),
            pin_factory=pin_factory,
        )

    @property
    def at_full(self) -> bool:
        return bool(self.full.is_pressed)

    @property
    def at_empty(self) -> bool:
        return bool(self.empty.is_pressed)


class EmergencyStop(Button):
    """Latching mushroom emergency-stop button closing to GND."""

    def __init__(self, pin: int, *, pin_factory: Factory | None = None) -> None:
        super().__init__(pin, pull_up=True, pin_factory=pin_factory)


class AlarmBuzzer(PWMOutputDevice):
    """Passive piezo buzzer driven by PWM at an audible frequency (50 % duty while sounding).

    :meth:`burst` plays *pulses* tone pulses in a background thread; a new burst or
    :meth:`silence` cancels the one playing.
    """

    def __init__(self, pin: int, *, pin_factory: Factory | None = None) -> None:
        super().__init__(pin, frequency=440, pin_factory=pin_factory)
        self._cancel = threading.Event()
        self._player: threading.Thread | None = None

    @property
    def is_sounding(self) -> bool:
        return self.value > 0

    def burst(
        self, frequency_hz: float, pulses: int, pulse_on_s: float = 0.15, pulse_off_s: float = 0.1
    ) -> None:
        """Play *pulses* pulses of *frequency_hz*, each *pulse_on_s* long, *pulse_off_s* apart."""
        if not 20 <= frequency_hz <= 20_000:
            raise ValueError(f"frequency_hz must be 20..20000 Hz, not {frequency_hz}")
        if pulses < 1:
            raise ValueError(f"pulses must be at least 1, not {pulses}")
        self.silence()
        self._cancel = cancel = threading.Event()
        self._player = threading.Thread(
            target=self._play,
            args=(cancel, frequency_hz, pulses, pulse_on_s, pulse_off_s),
            name="buzzer-burst",
            daemon=True,
        )
        self._player.start()

    def _play(
        self, cancel: threading.Event, frequency_hz: float, pulses: int, on_s: float, off_s: float
    ) -> None:
        self.frequency = frequency_hz
        for index in range(pulses):
            if cancel.is_set():
                break
            self.value = 0.5
            cancelled = cancel.wait(on_s)
            self.value = 0
            if cancelled or (index < pulses - 1 and cancel.wait(off_s)):
                break

    def silence(self) -> None:
        self._cancel.set()
        player = self._player
        if player is not None and player is not threading.current_thread():
            player.join(timeout=1.0)
        self._player = None
        self.value = 0

    def close(self) -> None:
        if getattr(self, "_cancel", None) is not None:
            self._cancel.set()
            player = self._player
            if player is not None and player is not threading.current_thread():
                player.join(timeout=1.0)
        super().close()


class StatusLed(RGBLED):
    """Common-cathode RGB status LED: alarm colours (red/yellow/cyan), green when infusing."""

    COLOURS: ClassVar[dict[str, tuple[float, float, float]]] = {
        "off": (0, 0, 0),
        "red": (1, 0, 0),
        "yellow": (1, 0.8, 0),
        "cyan": (0, 1, 1),
        "green": (0, 1, 0),
        "blue": (0, 0, 1),
    }

    def __init__(
        self, red: int, green: int, blue: int, *, pin_factory: Factory | None = None
    ) -> None:
        super().__init__(red, green, blue, pin_factory=pin_factory)

    def show(self, colour: str, flash_hz: float | None = None) -> None:
        """Light *colour* steadily, or flashing at *flash_hz* (50 % duty) when given."""
        if colour not in self.COLOURS:
            raise ValueError(f"unknown colour {colour!r}; allowed {sorted(self.COLOURS)}")
        rgb = self.COLOURS[colour]
        if flash_hz:
            half_period_s = 0.5 / flash_hz
            self.blink(on_time=half_period_s, off_time=half_period_s, on_color=rgb)
        else:
            self._stop_blink()
            self.color = rgb


class PinchValve(DigitalOutputDevice):
    """Solenoid pinch valve on the catheter line: energised it kinks (occludes) the catheter."""


class LeakValve(DigitalOutputDevice):
    """Solenoid valve on a side branch to a waste beaker: energised it opens a leak."""


class RefillValve(DigitalOutputDevice):
    """3-way solenoid valve at the syringe outlet. De-energised the syringe feeds the catheter
    line; energised it joins the refill port, where check valves send what the plunger pushes
    to the waste cup and let a withdrawing plunger draw from the supply bottle."""
