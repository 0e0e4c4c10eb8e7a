"""Hardware configuration: pins, syringe geometry, drive train, sensors and the simulated bench.

These models are the ``[pins]``, ``[syringe]``, ``[drive]``, ``[flow_sensor]``, ``[balance]`` and
``[sim]`` tables of ``rig.toml``. They validate at construction: unknown keys, wrong types, NaN,
non-positive geometry and pins out of range or used twice are rejected.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

BCM_PIN_MIN = 2
BCM_PIN_MAX = 27
I2C_PINS = (2, 3)

BcmPin = Annotated[int, Field(ge=BCM_PIN_MIN, le=BCM_PIN_MAX, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class StrictModel(BaseModel):
    """Base for every configuration table: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PinsConfig(StrictModel):
    """BCM pin numbers of everything wired to the Pi's header."""

    step: BcmPin = 18
    dir: BcmPin = 23
    enable: BcmPin = 24
    microstep: Annotated[list[BcmPin], Field(min_length=3, max_length=3)] = [17, 27, 22]
    limit_full: BcmPin = 5
    limit_empty: BcmPin = 6
    estop: BcmPin = 13
    buzzer: BcmPin = 12
    led_red: BcmPin = 16
    led_green: BcmPin = 20
    led_blue: BcmPin = 21
    pinch_valve: BcmPin | None = None
    leak_valve: BcmPin | None = None
    refill_valve: BcmPin | None = None

    @model_validator(mode="after")
    def _pins_unique(self) -> PinsConfig:
        seen: dict[int, str] = {}
        for name, pin in self.assignments():
            if pin in seen:
                raise ValueError(
                    f"pin {pin} is used twice ({seen[pin]} and {name}); each BCM pin may be "
                    "assigned once"
                )
            seen[pin] = name
        return self

    def assignments(self) -> list[tuple[str, int]]:
        """Every (function, BCM pin) pair, microstep pins named m0..m2, optional pins omitted."""
        pairs: list[tuple[str, int]] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "microstep":
                pairs.extend((f"microstep.m{i}", pin) for i, pin in enumerate(value))
            elif value is not None:
                pairs.append((name, value))
        return pairs


class SyringeConfig(StrictModel):
    """The syringe used as the pump reservoir on the bench."""

    inner_diameter_mm: PositiveFloat = 19.13
    """A 20 mL syringe (BD Plastipak 20 mL): the 20 mL reservoir."""
    nominal_volume_ml: PositiveFloat = 20.0

    @property
    def ul_per_mm(self) -> float:
        """Volume displaced per millimetre of plunger travel (µL/mm == mm³/mm)."""
        radius_mm = self.inner_diameter_mm / 2
        return math.pi * radius_mm * radius_mm

    @property
    def stroke_mm(self) -> float:
        """Plunger travel from full to empty."""
        return self.nominal_volume_ml * 1000.0 / self.ul_per_mm


class DriveConfig(StrictModel):
    """Stepper drive train: lead screw, motor and driver microstepping."""

    driver: Literal["drv8825", "a4988"] = "drv8825"
    lead_screw_pitch_mm: PositiveFloat = 0.8
    steps_per_rev: Annotated[int, Field(gt=0, strict=True)] = 200
    microstepping: Literal[1, 2, 4, 8, 16, 32] = 32
    max_rate_steps_per_s: PositiveFloat = 10_000.0
    step_pulse_us: Annotated[float, Field(ge=1, le=100, allow_inf_nan=False)] = 2.0
    step_spin_us: Annotated[float, Field(ge=0, le=5000, allow_inf_nan=False)] = 0.0
    """Software step timing: busy-wait this long before each deadline (less lateness, more CPU)."""

    @model_validator(mode="after")
    def _driver_supports_microstepping(self) -> DriveConfig:
        if self.driver == "a4988" and self.microstepping == 32:
            raise ValueError("microstepping 32 is not available on the a4988 (allowed 1-16)")
        return self

    @property
    def microsteps_per_mm(self) -> float:
        return self.steps_per_rev * self.microstepping / self.lead_screw_pitch_mm


STABLE_PORT_PREFIX = "/dev/itbrig-"
"""Serial ports named ``/dev/itbrig-<name>`` are links that the rig's udev rules make."""
PI_UART_PORTS = frozenset(
    {"/dev/serial0", "/dev/serial1", "/dev/ttyAMA0", "/dev/ttyAMA10", "/dev/ttyS0"}
)
"""The Pi's own UART (GPIO 14/15): using it needs the serial port enabled in the firmware."""

_USB_ID = re.compile(r"[0-9a-f]{4}")
_USB_SERIAL = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _usb_id(value: str) -> str:
    if not _USB_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a USB id: four lowercase hex digits, as lsusb shows")
    return value


def _usb_serial(value: str) -> str:
    if not _USB_SERIAL.fullmatch(value):
        raise ValueError(
            f"{value!r}: a USB serial number here is 1 to 64 letters, digits, '.', '_' or '-'"
        )
    return value


UsbId = Annotated[str, AfterValidator(_usb_id)]
"""A USB vendor or product id: four lowercase hex digits, as udev reads them from sysfs."""
_STABLE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def _serial_port(path: str) -> str:
    if not path.startswith("/") or any(char.isspace() for char in path):
        raise ValueError(
            f"{path!r} is not a device path; give an absolute path without spaces, such as "
            f"{STABLE_PORT_PREFIX}balance or /dev/ttyUSB0"
        )
    if path.startswith(STABLE_PORT_PREFIX) and not _STABLE_NAME.fullmatch(
        path.removeprefix(STABLE_PORT_PREFIX)
    ):
        raise ValueError(
            f"{path!r}: a stable name is {STABLE_PORT_PREFIX} followed by lowercase letters, "
            "digits and '-'"
        )
    return path


SerialPort = Annotated[str, AfterValidator(_serial_port)]
"""An absolute device path; a ``/dev/itbrig-`` name is one the rig's udev rules make."""


class UsbSerialMatch(StrictModel):
    """How udev recognises a USB–serial adapter, to give it its stable ``/dev/itbrig-`` name.

    Vendor and product id (``lsusb``); two adapters with the same ids (two FTDI FT232R, say) are
    told apart by the serial number the chip reports (``udevadm info -q property -n
    /dev/ttyUSB0``, ``ID_SERIAL_SHORT``).
    """

    vendor_id: UsbId = "0403"
    product_id: UsbId = "6001"
    serial: Annotated[str, AfterValidator(_usb_serial)] | None = None

    @property
    def usb_id(self) -> str:
        return f"{self.vendor_id}:{self.product_id}"


class FlowSensorConfig(StrictModel):
    """Sensirion SLF3S-0600F liquid flow sensor: on the Pi's I2C bus or through an SCC1 cable."""

    kind: Literal["i2c", "scc1"] = "i2c"
    i2c_bus: str = "/dev/i2c-1"
    i2c_address: Annotated[int, Field(ge=0x03, le=0x77, strict=True)] = 0x08
    port: SerialPort = "/dev/itbrig-scc1"
    usb: UsbSerialMatch = UsbSerialMatch()
    """The SCC1 cable's USB ids: FTDI's default 0403:6001 (it is FTDI-based)."""
    read_timeout_s: Annotated[float, Field(gt=0, le=5, allow_inf_nan=False)] = 0.5


class BalanceConfig(StrictModel):
    """Mettler Toledo MT-SICS balance on a serial port (optional on the bench)."""

    enabled: bool = True
    port: SerialPort = "/dev/itbrig-balance"
    usb: UsbSerialMatch = UsbSerialMatch()
    """The USB–RS-232 adapter's ids (default an FTDI FT232R adapter, 0403:6001)."""
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400] = 9600
    timeout_s: Annotated[float, Field(gt=0, le=30, allow_inf_nan=False)] = 2.0


class SimConfig(StrictModel):
    """Physical parameters of the simulated bench (ignored on real hardware)."""

    tubing_compliance_ul_per_kpa: PositiveFloat = 0.5
    catheter_resistance_kpa_min_per_ul: PositiveFloat = 0.02
    sensor_noise_ul_per_min: NonNegativeFloat = 0.3
    sensor_offset_ul_per_min: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    sensor_time_constant_s: NonNegativeFloat = 0.05
    balance_noise_g: NonNegativeFloat = 0.00002
    balance_readability_g: Annotated[float, Field(ge=0.000001, le=1, allow_inf_nan=False)] = 0.00001
    """Readability d of the simulated balance: readings are rounded to it (0.0001 = 0.1 mg)."""
    balance_drift_g_per_h: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    """Slow zero drift of the simulated balance (signed), from power-on; zeroing removes it."""
    balance_evaporation_mg_per_h: NonNegativeFloat = 0.0
    """Water evaporating from the open beaker on the simulated balance."""
    balance_sir_rate_hz: Annotated[float, Field(gt=0, le=50, allow_inf_nan=False)] = 10.0
    """Weights per second the simulated balance sends after SIR (continuous weights)."""
    water_temperature_c: Annotated[float, Field(gt=0, lt=100, allow_inf_nan=False)] = 20.0
    """Temperature of the water in the line and the beaker (the flow sensor reports it; a
    calibration takes the water density from it)."""
    fluid_density_g_per_ml: PositiveFloat = 0.998
    actual_inner_diameter_mm: PositiveFloat | None = None
    """True bore of the simulated syringe (None: the ``[syringe]`` value); a bore 1.5 % wide
    holds 3 % more per step than the nominal geometry says: what a volume calibration finds."""
    backlash_mm: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    """Lead-screw backlash: after a reversal the nut travels this far before the plunger moves."""
    stick_slip_speed_mm_per_min: NonNegativeFloat = 0.0
    """Plunger speed below which the seal sticks and slips (0: no stick-slip)."""
    stick_slip_loss_fraction: Fraction = 0.0
    """Share of steps lost to stick-slip as the speed falls to zero (linear to none at
    ``stick_slip_speed_mm_per_min``)."""
    initial_fill_ml: NonNegativeFloat = 20.0
    seed: Annotated[int, Field(strict=True)] | None = None

    @model_validator(mode="after")
    def _readability_in_micrograms(self) -> SimConfig:
        micrograms = self.balance_readability_g * 1e6
        if abs(micrograms - round(micrograms)) > 1e-6:
            raise ValueError(
                f"sim.balance_readability_g ({self.balance_readability_g} g) must be a whole "
                "number of micrograms (at most six decimals), e.g. 0.0001 for 0.1 mg"
            )
        return self


class HardwareConfig(StrictModel):
    """Everything the hardware layer needs to build a bench."""

    pins: PinsConfig = PinsConfig()
    syringe: SyringeConfig = SyringeConfig()
    drive: DriveConfig = DriveConfig()
    flow_sensor: FlowSensorConfig = FlowSensorConfig()
    balance: BalanceConfig = BalanceConfig()
    sim: SimConfig = SimConfig()

    @model_validator(mode="after")
    def _i2c_pins_free(self) -> HardwareConfig:
        if self.flow_sensor.kind == "i2c":
            for name, pin in self.pins.assignments():
                if pin in I2C_PINS:
                    raise ValueError(
                        f"pins.{name} = {pin} is the I2C bus of the flow sensor "
                        f"(BCM {I2C_PINS[0]} SDA, {I2C_PINS[1]} SCL); choose another pin"
                    )
        return self

    @model_validator(mode="after")
    def _fill_fits_syringe(self) -> HardwareConfig:
        if self.sim.initial_fill_ml > self.syringe.nominal_volume_ml:
            raise ValueError(
                f"sim.initial_fill_ml ({self.sim.initial_fill_ml} mL) exceeds "
                f"syringe.nominal_volume_ml ({self.syringe.nominal_volume_ml} mL)"
            )
        return self

    @model_validator(mode="after")
    def _serial_devices_distinct(self) -> HardwareConfig:
        if self.flow_sensor.kind != "scc1" or not self.balance.enabled:
            return self
        scc1, balance = self.flow_sensor, self.balance
        if scc1.port == balance.port:
            raise ValueError(
                f"flow_sensor.port and balance.port are both {scc1.port}; the SCC1 cable and "
                "the balance need a port each"
            )
        ports = (scc1.port, balance.port)
        # A udev rule for either stable name must not also match the other USB adapter.
        stable = any(p.startswith(STABLE_PORT_PREFIX) for p in ports) and not any(
            p in PI_UART_PORTS for p in ports
        )
        serials = (scc1.usb.serial, balance.usb.serial)
        if (
            stable
            and scc1.usb.usb_id == balance.usb.usb_id
            and (None in serials or serials[0] == serials[1])
        ):
            raise ValueError(
                f"flow_sensor.usb and balance.usb both match USB id {scc1.usb.usb_id}, so udev "
                "cannot tell the SCC1 cable from the balance's adapter; set a different "
                "usb.serial in each, the serial number of its chip (udevadm info -q property "
                "-n /dev/ttyUSB0: ID_SERIAL_SHORT)"
            )
        return self

    def serial_devices(self) -> list[tuple[str, str, UsbSerialMatch]]:
        """The USB–serial devices in use: (what, port, USB match)."""
        devices = []
        if self.balance.enabled:
            devices.append(("balance", self.balance.port, self.balance.usb))
        if self.flow_sensor.kind == "scc1":
            devices.append(("SCC1 cable", self.flow_sensor.port, self.flow_sensor.usb))
        return devices

    def buses(self) -> list[str]:
        """The Pi buses this bench needs enabled: ``i2c`` (flow sensor), ``uart`` (GPIO 14/15)."""
        needed = []
        if self.flow_sensor.kind == "i2c":
            needed.append("i2c")
        if any(port in PI_UART_PORTS for _what, port, _usb in self.serial_devices()):
            needed.append("uart")
        return needed

    @property
    def sim_inner_diameter_mm(self) -> float:
        """The simulated syringe's true bore: ``[sim] actual_inner_diameter_mm`` or nominal."""
        return self.sim.actual_inner_diameter_mm or self.syringe.inner_diameter_mm

    @property
    def ul_per_microstep(self) -> float:
        """Nominal volume per microstep from geometry (before any volume calibration)."""
        return self.syringe.ul_per_mm / self.drive.microsteps_per_mm

    @property
    def stroke_microsteps(self) -> int:
        """Microsteps from full to empty."""
        return round(self.syringe.stroke_mm * self.drive.microsteps_per_mm)
