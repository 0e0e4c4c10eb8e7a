"""Sensirion SLF3S-0600F liquid flow sensor: the flow meter in the rig's catheter line.

The sensor is read through Sensirion's own drivers, over one of two transports:

- the Pi's I2C bus (``/dev/i2c-N``), with ``sensirion_i2c_sf06_lf``'s ``Sf06LfDevice`` over a
  ``sensirion_driver_adapters`` I2C channel (:class:`Sf06FlowSensor`);
- the Sensirion SCC1 USB sensor cable (SHDLC over a serial port), with the same ``Sf06LfDevice``
  driving I2C transfers through ``sensirion_uart_scc1``'s cable driver (:class:`Scc1FlowSensor`).

Both return :class:`FlowReading` in physical units and raise only the typed errors below, so the
rig never sees a vendor exception, an ``OSError`` or a hung read.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import serial
from sensirion_driver_adapters.channel import TxRxChannel
from sensirion_driver_adapters.i2c_adapter.i2c_channel import I2cChannel
from sensirion_i2c_driver import CrcCalculator, I2cConnection, LinuxI2cTransceiver
from sensirion_i2c_driver.errors import (
    I2cChannelDisabledError,
    I2cChecksumError,
    I2cNackError,
    I2cTimeoutError,
    I2cTransceiveError,
)
from sensirion_i2c_sf06_lf import Sf06LfDevice
from sensirion_i2c_sf06_lf.commands import InvFlowScaleFactors, SignalingFlagsT
from sensirion_shdlc_driver import ShdlcConnection, ShdlcSerialPort
from sensirion_shdlc_driver.errors import (
    ShdlcDeviceError,
    ShdlcResponseError,
    ShdlcTimeoutError,
)
from sensirion_uart_scc1.drivers.slf_common import SLF3x_PRODUCT_NAME
from sensirion_uart_scc1.scc1_shdlc_device import Scc1ShdlcDevice

from hal.config import FlowSensorConfig

log = logging.getLogger(__name__)

#: Factory I2C address of the SLF3S family.
SLF3S_I2C_ADDRESS = 0x08
SLF3S_0600F_FULL_SCALE_UL_PER_MIN = 3250.0
"""Full scale of the SLF3S-0600F liquid flow sensor (3.25 mL/min, water)."""
#: CRC-8 protecting every 16-bit word on the SF06 bus: width, polynomial, init, final XOR.
SF06_CRC_PARAMETERS = (8, 0x31, 0xFF, 0x00)
#: Upper 24 bits of the SLF3S-0600F product identifier (the low 8 bits are the revision).
SLF3S_0600F_PRODUCT_FAMILY = 0x070303
#: Baud rate of the SCC1 cable's SHDLC interface.
SCC1_BAUDRATE = 115200
#: SHDLC slave address of an SCC1 cable.
SCC1_SHDLC_ADDRESS = 0

# i2c-dev ioctl that sets the adapter's transfer timeout, in units of 10 ms (linux/i2c-dev.h).
_I2C_TIMEOUT_IOCTL = 0x0702
_ABSENT_ERRNOS = {errno.ENXIO, errno.EREMOTEIO, errno.ENODEV, errno.ENOENT, errno.EIO, errno.ENOTTY}


Medium = Literal["water", "ipa"]
"""Calibration a measurement is started with: water (command 0x3608) or isopropyl alcohol
(0x3615); the SLF3S-0600F has both, with the same flow scale factor."""

MEDIA: tuple[Medium, ...] = get_args(Medium)


@dataclass(frozen=True)
class FlowReading:
    """One result of the flow sensor: flow through the line, liquid temperature and status flags.

    ``air_in_line`` and ``high_flow`` report an event measured at any time since the previous
    read (the sensor keeps it flagged until read). ``medium`` is the calibration in use.
    """

    flow_ul_per_min: float
    temperature_c: float
    air_in_line: bool
    high_flow: bool
    medium: Medium = "water"


class FlowSensorError(Exception):
    """The flow sensor could not deliver a reading."""


class FlowSensorAbsent(FlowSensorError):
    """No sensor answers: bus or port missing, sensor unplugged or unpowered, or it NACKed."""


class FlowSensorTimeout(FlowSensorError):
    """The sensor (or the cable in front of it) gave no answer within the read timeout."""


class FlowSensorDataError(FlowSensorError):
    """An answer arrived but was corrupt: CRC mismatch, garbage, or a malformed frame."""


class FlowSensor(Protocol):
    """What the rig needs from a liquid flow sensor."""

    @property
    def description(self) -> str:
        """Which sensor this is and where it is attached."""

    def identify(self) -> tuple[int, int]:
        """``(product_identifier, serial_number)``; the sensor must be idle."""

    def start(self, medium: Medium = "water") -> None:
        """Start continuous measurement with the calibration for ``medium`` (water by default)."""

    def read(self) -> FlowReading:
        """Return the latest result; raises a :class:`FlowSensorError` subclass on failure."""

    def stop(self) -> None:
        """Stop measuring (the sensor's heater goes idle)."""

    def close(self) -> None:
        """Stop if measuring and release the bus or port."""


def sf06_i2c_channel(connection: Any, address: int = SLF3S_I2C_ADDRESS) -> I2cChannel:
    """An SF06 I2C channel (words protected by CRC-8) over any vendor I2C connection.

    ``connection`` is anything with the vendor's ``execute(slave_address, request)`` interface:
    ``sensirion_i2c_driver.I2cConnection``, the SCC1 cable's I2C transceiver, or the vendor's
    ``I2cConnectionMock``.
    """
    return I2cChannel(connection, slave_address=address, crc=CrcCalculator(*SF06_CRC_PARAMETERS))


def _error_from_os(error: OSError, where: str, action: str) -> FlowSensorError:
    detail = error.strerror or str(error)
    if error.errno == errno.ETIMEDOUT:
        return FlowSensorTimeout(f"{where}: no answer during {action} ({detail})")
    if error.errno in _ABSENT_ERRNOS:
        return FlowSensorAbsent(f"{where}: no device answered during {action} ({detail})")
    return FlowSensorError(f"{where}: {action} failed ({detail})")


def _translate(error: Exception, where: str, action: str) -> FlowSensorError | None:
    """The typed error for a vendor or OS exception, or None if it is not a transport error."""
    if isinstance(error, FlowSensorError):
        return error
    if isinstance(error, I2cChecksumError):
        return FlowSensorDataError(
            f"{where}: corrupt reply during {action} (CRC mismatch: {error})"
        )
    if isinstance(error, I2cNackError | I2cChannelDisabledError):
        return FlowSensorAbsent(
            f"{where}: not acknowledged (NACK) during {action}; the sensor is absent, unpowered, "
            "or not measuring (reads are refused until start())"
        )
    if isinstance(error, I2cTimeoutError | ShdlcTimeoutError):
        return FlowSensorTimeout(f"{where}: no answer within the read timeout during {action}")
    if isinstance(error, I2cTransceiveError):
        if isinstance(error.transceiver_error, OSError):
            return _error_from_os(error.transceiver_error, where, action)
        return FlowSensorError(f"{where}: I2C transfer failed during {action} ({error})")
    if isinstance(error, ShdlcResponseError):
        return FlowSensorDataError(f"{where}: malformed SHDLC frame during {action} ({error})")
    if isinstance(error, ShdlcDeviceError):
        # After opening, every command is an I2C transfer: an error means the sensor behind the
        # cable did not answer it.
        return FlowSensorAbsent(
            f"{where}: the cable reported error 0x{error.error_code:02X} during {action} "
            f"({error.error_message})"
        )
    if isinstance(error, serial.SerialTimeoutException):
        return FlowSensorTimeout(f"{where}: serial write timed out during {action}")
    if isinstance(error, serial.SerialException):
        return FlowSensorAbsent(f"{where}: serial port failed during {action} ({error})")
    if isinstance(error, OSError):
        return _error_from_os(error, where, action)
    if isinstance(error, struct.error | TypeError):
        # The vendor unpacks short or empty replies with struct and fails on them.
        return FlowSensorDataError(f"{where}: malformed reply during {action} ({error})")
    return None


@contextmanager
def _typed_errors(where: str, action: str) -> Iterator[None]:
    """Re-raise vendor, serial and OS exceptions from the enclosed transfer as FlowSensorError."""
    try:
        yield
    except Exception as error:
        typed = _translate(error, where, action)
        if typed is None or typed is error:
            raise
        raise typed from error


class Sf06FlowSensor:
    """An SLF3S-0600F liquid flow sensor, read with Sensirion's SF06-LF driver over any channel.

    ``channel`` is a ``sensirion_driver_adapters`` channel that reaches the sensor: the Pi's I2C
    bus (:meth:`from_bus`), an SCC1 cable (:class:`Scc1FlowSensor`) or the simulated sensor
    (``hal.sim.flow_sensor.sim_i2c_channel``). ``on_close`` releases whatever the channel holds.
    On the first :meth:`start` the product identifier is read and must be an SLF3S-0600F, since
    the flow scale factor is product specific.
    """

    #: Raw flow counts per µL/min for this product (vendor's table; 10 for the SLF3S-0600F).
    FLOW_SCALE = InvFlowScaleFactors.SLF3S_0600F
    #: Extra wait after the start command before the first result is requested.
    start_settle_s: float = 0.0

    def __init__(
        self,
        channel: TxRxChannel,
        *,
        description: str = "SLF3S-0600F flow sensor",
        check_product: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._device = Sf06LfDevice(channel)
        self._description = description
        self._check_product = check_product
        self._on_close = on_close
        self._lock = threading.Lock()
        self._identified = False
        self._measuring = False
        self._medium: Medium = "water"
        self._closed = False

    @classmethod
    def from_bus(
        cls,
        bus_path: str = "/dev/i2c-1",
        address: int = SLF3S_I2C_ADDRESS,
        read_timeout_s: float = 0.5,
    ) -> Sf06FlowSensor:
        """Open the sensor on a Linux I2C bus such as the Pi's ``/dev/i2c-1``.

        The channel is the vendor's Linux I2C stack (``LinuxI2cTransceiver`` in an
        ``I2cConnection`` in an ``I2cChannel``, as ``LinuxI2cChannelProvider`` builds it) with the
        kernel's per-transfer timeout set to ``read_timeout_s``, so a stuck bus returns ETIMEDOUT.
        """
        where = f"SLF3S-0600F at 0x{address:02X} on {bus_path}"
        try:
            transceiver = _TimedLinuxI2cTransceiver(bus_path, read_timeout_s)
        except OSError as error:
            raise _error_from_os(error, where, "opening the I2C bus") from error
        channel = sf06_i2c_channel(I2cConnection(transceiver), address)
        return cls(channel, description=where, on_close=transceiver.close)

    @property
    def description(self) -> str:
        """Which sensor this is and where it is attached."""
        return self._description

    @property
    def is_measuring(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._measuring

    @property
    def medium(self) -> Medium:
        """The calibration the last :meth:`start` selected."""
        return self._medium

    def identify(self) -> tuple[int, int]:
        """Read ``(product_identifier, serial_number)``; the sensor must be idle."""
        with self._lock, _typed_errors(self._description, "reading the product identifier"):
            product_id, serial_bytes = self._device.read_product_identifier()
        return int(product_id), int.from_bytes(bytes(serial_bytes), "big")

    def start(self, medium: Medium = "water") -> None:
        """Start continuous measurement calibrated for water (command 0x3608) or, with
        ``medium="ipa"``, isopropyl alcohol (0x3615).

        Any measurement already running (e.g. left over from a crashed process) is stopped first.
        """
        if medium not in MEDIA:
            raise ValueError(f"medium {medium!r} is not one of {', '.join(MEDIA)}")
        with self._lock, _typed_errors(self._description, "start"):
            self._device.stop_continuous_measurement()
            self._measuring = False
        if self._check_product and not self._identified:
            self._verify_product()
        with self._lock, _typed_errors(self._description, "start"):
            if medium == "ipa":
                self._device.start_ipa_continuous_measurement()
            else:
                self._device.start_h2o_continuous_measurement()
            self._measuring = True
            self._medium = medium
        if self.start_settle_s > 0:
            time.sleep(self.start_settle_s)

    def read(self) -> FlowReading:
        """The latest flow, temperature and flags, scaled by the vendor driver."""
        with self._lock, _typed_errors(self._description, "read"):
            flow, temperature, flags = self._device.read_measurement_data(self.FLOW_SCALE)
        signaling = SignalingFlagsT(int(flags))
        return FlowReading(
            flow_ul_per_min=float(flow.value),
            temperature_c=float(temperature.value),
            air_in_line=bool(signaling.air_in_line_flag),
            high_flow=bool(signaling.high_flow_flag),
            medium=self._medium,
        )

    def stop(self) -> None:
        """Stop continuous measurement (command 0x3FF9)."""
        with self._lock, _typed_errors(self._description, "stop"):
            self._device.stop_continuous_measurement()
            self._measuring = False

    def close(self) -> None:
        """Stop if measuring and release the bus or port; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._measuring:
                self.stop()
        except FlowSensorError as error:
            log.warning("%s: could not stop on close: %s", self._description, error)
        finally:
            if self._on_close is not None:
                self._on_close()

    def _verify_product(self) -> None:
        product_id, serial_number = self.identify()
        family = product_id >> 8
        if family != SLF3S_0600F_PRODUCT_FAMILY:
            name = SLF3x_PRODUCT_NAME.get(family, "an unknown product")
            raise FlowSensorDataError(
                f"{self._description}: product identifier 0x{product_id:08X} is {name}, not an "
                "SLF3S-0600F; its flow scale factor differs, refusing to measure"
            )
        log.info("%s: product 0x%08X, serial %d", self._description, product_id, serial_number)
        self._identified = True


class Scc1FlowSensor(Sf06FlowSensor):
    """An SLF3S-0600F plugged into a Sensirion SCC1 USB sensor cable on a serial port.

    The cable speaks SHDLC; ``sensirion_uart_scc1`` turns the SF06 driver's I2C transfers into
    the cable's I2C-transceive command. ``read_timeout_s`` is added to every SHDLC response time,
    so a silent cable raises :class:`FlowSensorTimeout` rather than blocking.
    """

    #: The cable's I2C transfer does not wait out the start command's 12 ms busy time; the
    #: vendor's own SCC1 SLF3x driver waits 15 ms after starting.
    start_settle_s = 0.015

    def __init__(
        self,
        port: str,
        *,
        i2c_address: int = SLF3S_I2C_ADDRESS,
        read_timeout_s: float = 0.5,
        baudrate: int = SCC1_BAUDRATE,
        check_product: bool = True,
    ) -> None:
        where = f"SLF3S-0600F at 0x{i2c_address:02X} via SCC1 cable on {port}"
        try:
            shdlc_port = ShdlcSerialPort(
                port=port, baudrate=baudrate, additional_response_time=read_timeout_s
            )
        except (serial.SerialException, OSError) as error:
            raise FlowSensorAbsent(f"{where}: cannot open the serial port ({error})") from error
        try:
            with _typed_errors(where, "opening the SCC1 cable"):
                cable = Scc1ShdlcDevice(ShdlcConnection(shdlc_port), SCC1_SHDLC_ADDRESS)
        except BaseException:
            shdlc_port.close()
            raise
        self._cable = cable
        channel = sf06_i2c_channel(cable.get_i2c_transceiver(), i2c_address)
        super().__init__(
            channel, description=where, check_product=check_product, on_close=shdlc_port.close
        )

    @property
    def cable_serial_number(self) -> str:
        """Serial number the SCC1 cable reported when it was opened."""
        return str(self._cable.serial_number)


class _TimedLinuxI2cTransceiver(LinuxI2cTransceiver):
    """The vendor's Linux i2c-dev transceiver with the adapter's transfer timeout set on open."""

    def __init__(self, device_file: str, timeout_s: float) -> None:
        self._timeout_ticks = max(1, math.ceil(timeout_s * 100))  # units of 10 ms
        super().__init__(device_file=device_file)

    def open(self) -> None:
        super().open()
        try:
            fcntl.ioctl(self._file_descriptor, _I2C_TIMEOUT_IOCTL, self._timeout_ticks)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._file_descriptor is not None:
            super().close()


class AbsentFlowSensor:
    """Stands where a flow sensor could not be opened (bus or cable missing, sensor unplugged).

    Every measurement call raises :class:`FlowSensorAbsent` with the reason the sensor could not
    be opened, so the rig starts, its self-test names the part, and its flow monitor raises a
    sensor fault, instead of the whole service failing to start.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @property
    def description(self) -> str:
        return f"absent flow sensor ({self.reason})"

    @property
    def is_measuring(self) -> bool:
        return False

    def _absent(self) -> FlowSensorAbsent:
        return FlowSensorAbsent(self.reason)

    def identify(self) -> tuple[int, int]:
        raise self._absent()

    def start(self, medium: Medium = "water") -> None:
        raise self._absent()

    def read(self) -> FlowReading:
        raise self._absent()

    def stop(self) -> None:
        """Nothing to stop."""

    def close(self) -> None:
        """Nothing to release."""


def open_flow_sensor(config: FlowSensorConfig) -> FlowSensor:
    """Open the flow sensor the ``[flow_sensor]`` table describes (I2C bus or SCC1 cable)."""
    if config.kind == "i2c":
        return Sf06FlowSensor.from_bus(config.i2c_bus, config.i2c_address, config.read_timeout_s)
    if config.kind == "scc1":
        return Scc1FlowSensor(
            config.port, i2c_address=config.i2c_address, read_timeout_s=config.read_timeout_s
        )
    raise ValueError(f"unknown flow sensor kind {config.kind!r} (expected 'i2c' or 'scc1')")
