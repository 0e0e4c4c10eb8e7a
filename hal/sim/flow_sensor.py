"""Simulated Sensirion SLF3S-0600F liquid flow sensor, speaking the sensor's real wire protocol.

:class:`SimulatedSlf3s` models the sensor as an I2C target: command words in, measurement words
with CRC-8 out, NACKs where the real part NACKs. Two transports put it behind the production
drivers of :mod:`hal.flow_sensor`:

- :func:`sim_i2c_channel`: the vendor's I2C channel over the vendor's ``I2cConnectionMock``,
  whose bus transactions are served byte for byte by the model;
- :class:`SimulatedScc1Cable`: an SCC1 USB cable on a pseudo-terminal, serving SHDLC frames and
  executing the cable's I2C-transceive command against the model.
"""

from __future__ import annotations

import math
import os
import random
import select
import struct
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

from sensirion_driver_adapters.i2c_adapter.i2c_channel import I2cChannel
from sensirion_driver_adapters.mocks.i2c_connection_mock import I2cConnectionMock
from sensirion_i2c_driver.errors import I2cNackError

from hal.flow_sensor import (
    SLF3S_0600F_FULL_SCALE_UL_PER_MIN,
    SLF3S_I2C_ADDRESS,
    Medium,
    sf06_i2c_channel,
)

CMD_START_H2O_CONTINUOUS = 0x3608
CMD_START_IPA_CONTINUOUS = 0x3615
CMD_STOP_CONTINUOUS = 0x3FF9
CMD_PRODUCT_ID_PREPARE = 0x367C
CMD_PRODUCT_ID_READ = 0xE102

#: Raw flow counts per µL/min (SLF3S-0600F scale factor).
FLOW_COUNTS_PER_UL_PER_MIN = 10
#: Raw temperature counts per °C.
TEMPERATURE_COUNTS_PER_C = 200
#: Time from the start command until the first result can be read.
FIRST_RESULT_DELAY_S = 0.012
#: Full scale assumed for the SLF3S-0600F (the vendor packages carry no range data; beyond it
#: the high-flow flag is set). The raw int16 itself saturates at ±3276.8 µL/min.
#: Product identifier of an SLF3S-0600F (family 0x070303, revision 0x01).
SLF3S_0600F_PRODUCT_ID = 0x07030301

START_COMMANDS: dict[int, Medium] = {
    CMD_START_H2O_CONTINUOUS: "water",
    CMD_START_IPA_CONTINUOUS: "ipa",
}
"""Continuous-measurement start commands of the SLF3S-0600F and the calibration each selects
(the vendor lists 0x3615, isopropyl alcohol, for the SLF3C/S-1300F, SLF3S-0600F and -4000B).
The raw flow scale (10 counts per µL/min) is the same for both."""

_INT16_MIN, _INT16_MAX = -0x8000, 0x7FFF
_FLAG_AIR_IN_LINE = 1 << 0
_FLAG_HIGH_FLOW = 1 << 1


def crc8(data: bytes) -> int:
    """Sensirion CRC-8 of one data word: polynomial 0x31, init 0xFF, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _words_with_crc(payload: bytes, *, corrupt: bool = False) -> bytes:
    """Payload as sent on the bus: each 16-bit word followed by its CRC (inverted if corrupt)."""
    out = bytearray()
    for i in range(0, len(payload), 2):
        word = payload[i : i + 2]
        out += word
        out.append(crc8(word) ^ (0xFF if corrupt else 0x00))
    return bytes(out)


def _clamp_int16(value: float) -> int:
    return max(_INT16_MIN, min(_INT16_MAX, round(value)))


@dataclass
class SensorFaults:
    """Faults injected into the simulated sensor.

    ``drift_ul_per_min_per_s`` grows from the moment the faults are set
    (:meth:`SimulatedSlf3s.set_faults`). ``dropout`` makes the sensor stop answering (I2C NACK,
    and a cable in front of it reports the failed transfer). ``crc_error`` sends every word with
    a wrong CRC, as electrical noise on the bus would.
    """

    bias_ul_per_min: float = 0.0
    drift_ul_per_min_per_s: float = 0.0
    dropout: bool = False
    air_in_line: bool = False
    crc_error: bool = False


class SimulatedSlf3s:
    """A simulated SLF3S-0600F on an I2C bus, measuring the flow a bench model supplies.

    The measured flow is the true flow through a first-order lag (``time_constant_s``, updated
    exactly on the supplied clock assuming the true flow held its present value since the last
    result), plus offset, fault bias and drift and Gaussian noise, quantised to the raw int16
    (10 counts per µL/min) and saturating at the int16 range. The high-flow flag is set beyond
    ``full_scale_ul_per_min``; the air-in-line flag follows the fault, the bench's
    ``air_in_line`` callable, and ``air_in_line_since(t)`` (air passed the sensor after ``t``).
    Like the part, the sensor keeps an event flagged from the moment it measures it until a read
    reports it (once): each read, each :meth:`sample` (the sensor measuring between reads) and
    each change of faults measures. Like the real part it NACKs reads until the start command has
    been received and for 12 ms (of ``clock``) after it.
    """

    def __init__(
        self,
        true_flow_ul_per_min: Callable[[], float],
        *,
        clock: Callable[[], float] = time.monotonic,
        noise_ul_per_min: float = 0.3,
        offset_ul_per_min: float = 0.0,
        time_constant_s: float = 0.05,
        temperature_c: float = 23.0,
        air_in_line: Callable[[], bool] | None = None,
        air_in_line_since: Callable[[float], bool] | None = None,
        seed: int | None = None,
        full_scale_ul_per_min: float = SLF3S_0600F_FULL_SCALE_UL_PER_MIN,
        address: int = SLF3S_I2C_ADDRESS,
        serial_number: int = 0x0000_0000_0142_0815,
        product_id: int = SLF3S_0600F_PRODUCT_ID,
    ) -> None:
        self._true_flow = true_flow_ul_per_min
        self._clock = clock
        self.noise_ul_per_min = noise_ul_per_min
        self.offset_ul_per_min = offset_ul_per_min
        self.time_constant_s = time_constant_s
        self.temperature_c = temperature_c
        self._air_in_line = air_in_line
        self._air_in_line_since = air_in_line_since
        self._rng = random.Random(seed)
        self.full_scale_ul_per_min = full_scale_ul_per_min
        self.address = address
        self.serial_number = serial_number
        self.product_id = product_id
        self._lock = threading.RLock()
        self._faults = SensorFaults()
        self._faults_set_at = clock()
        self._measuring = False
        self._started_at = 0.0
        self._lagged_flow_ul_per_min = 0.0
        self._last_update = 0.0
        self._id_prepared = False
        self._id_pending = False
        self._latched_flags = 0  # events measured since the last read
        self._medium: Medium | None = None
        self._measured_at = 0.0  # when the sensor last measured (clock seconds)

    @property
    def faults(self) -> SensorFaults:
        """The faults currently injected (replace them with :meth:`set_faults`)."""
        return self._faults

    def set_faults(self, faults: SensorFaults) -> None:
        """Inject ``faults`` from now on; drift starts growing at this moment.

        What the old faults caused (air in line) stays flagged until the next read.
        """
        with self._lock:
            if self._measuring:
                self._measure()
            self._faults = faults
            self._faults_set_at = self._clock()

    def sample(self) -> None:
        """Measure now without a read, as the sensor does continuously on its own.

        An air-in-line or high-flow event measured now stays flagged until the next read.
        """
        with self._lock:
            if self._measuring and self._first_result_ready():
                self._measure()

    @property
    def is_measuring(self) -> bool:
        """True between the start and stop commands."""
        return self._measuring

    @property
    def medium(self) -> Medium | None:
        """The calibration the measurement was started with (None while idle).

        The model measures the bench's flow the same way for either: the liquid on the bench is
        what the operator chose the calibration for.
        """
        return self._medium if self._measuring else None

    # I2C target: what the sensor does on the bus ------------------------------------------------

    def i2c_write(self, address: int, data: bytes) -> bool:
        """A write transaction; returns False where the sensor would NACK."""
        with self._lock:
            if address != self.address or self._faults.dropout or len(data) != 2:
                return False
            return self._command(struct.unpack(">H", data)[0])

    def i2c_read(self, address: int, length: int) -> bytes | None:
        """A read transaction of ``length`` bytes; None where the sensor would NACK.

        A zero-length read only addresses the sensor, which any present sensor acknowledges.
        """
        with self._lock:
            if address != self.address or self._faults.dropout:
                return None
            if length == 0:
                return b""
            if self._id_pending:
                payload = struct.pack(">IQ", self.product_id, self.serial_number)
            elif self._measuring and self._first_result_ready():
                payload = self._measurement_payload()
            else:
                return None
            wire = _words_with_crc(payload, corrupt=self._faults.crc_error)
            return wire[:length].ljust(length, b"\xff")

    def _first_result_ready(self) -> bool:
        # A nanosecond of slack so 12 ms added to a float clock counts as 12 ms.
        return self._clock() - self._started_at >= FIRST_RESULT_DELAY_S - 1e-9

    def _command(self, command: int) -> bool:
        self._id_pending = False
        if self._measuring:
            if command != CMD_STOP_CONTINUOUS:
                return False  # only stop is accepted while measuring
            self._measuring = False
            return True
        if command in START_COMMANDS:
            now = self._clock()
            self._medium = START_COMMANDS[command]
            self._measuring = True
            self._started_at = now
            self._last_update = now
            self._lagged_flow_ul_per_min = float(self._true_flow())
            self._id_prepared = False
            self._latched_flags = 0
            self._measured_at = now
            return True
        if command == CMD_STOP_CONTINUOUS:
            return True
        if command == CMD_PRODUCT_ID_PREPARE:
            self._id_prepared = True
            return True
        if command == CMD_PRODUCT_ID_READ and self._id_prepared:
            self._id_pending = True
            return True
        return False

    def _measure(self, *, noise: bool = False) -> float:
        """Update the model to now, latch the events it shows, and return the measured flow.

        Only a read draws noise, so sampling between reads leaves a seeded sequence unchanged.
        """
        now = self._clock()
        true_flow = float(self._true_flow())
        dt = max(0.0, now - self._last_update)
        decay = math.exp(-dt / self.time_constant_s) if self.time_constant_s > 0 else 0.0
        lagged = true_flow + (self._lagged_flow_ul_per_min - true_flow) * decay
        self._lagged_flow_ul_per_min = lagged
        self._last_update = now
        faults = self._faults
        flow = (
            lagged
            + self.offset_ul_per_min
            + faults.bias_ul_per_min
            + faults.drift_ul_per_min_per_s * (now - self._faults_set_at)
        )
        if noise:
            flow += self._rng.gauss(0.0, self.noise_ul_per_min)
        air = (
            faults.air_in_line
            or (self._air_in_line is not None and bool(self._air_in_line()))
            or (
                self._air_in_line_since is not None
                and bool(self._air_in_line_since(self._measured_at))
            )
        )
        if air:
            self._latched_flags |= _FLAG_AIR_IN_LINE
        if abs(flow) > self.full_scale_ul_per_min:
            self._latched_flags |= _FLAG_HIGH_FLOW
        self._measured_at = now
        return flow

    def _measurement_payload(self) -> bytes:
        flow = self._measure(noise=True)
        flags, self._latched_flags = self._latched_flags, 0  # reported: cleared
        raw_flow = _clamp_int16(flow * FLOW_COUNTS_PER_UL_PER_MIN)
        raw_temperature = _clamp_int16(self.temperature_c * TEMPERATURE_COUNTS_PER_C)
        return struct.pack(">hhH", raw_flow, raw_temperature, flags)


class _MockBusTarget:
    """The model as the device the vendor's ``I2cConnectionMock`` talks to, NACKs as exceptions.

    The vendor's own ``I2cSensorMock`` adds CRCs itself and merges each write with the following
    read into one callback; this target hands the raw bus bytes to the model instead.
    """

    def __init__(self, device: SimulatedSlf3s) -> None:
        self._device = device

    def write(self, address: int, data: bytes) -> None:
        if not self._device.i2c_write(address, bytes(data)):
            raise I2cNackError(f"simulated SLF3S-0600F at 0x{address:02X} NACKed a write", b"")

    def read(self, address: int, nr_of_bytes_to_return: int) -> bytes:
        data = self._device.i2c_read(address, nr_of_bytes_to_return)
        if data is None:
            raise I2cNackError(f"simulated SLF3S-0600F at 0x{address:02X} NACKed a read", b"")
        return data


def sim_i2c_channel(device: SimulatedSlf3s) -> I2cChannel:
    """The vendor's I2C channel to ``device`` over the vendor's ``I2cConnectionMock``.

    The channel builds the command bytes and checks every CRC exactly as on the Pi's bus; the
    connection mock also performs the vendor's device-busy waits (12 ms after start, real time).
    """
    return sf06_i2c_channel(I2cConnectionMock(_MockBusTarget(device)), device.address)


# SCC1 cable ------------------------------------------------------------------------------------

_SHDLC_FRAME = 0x7E
_SHDLC_ESCAPE = 0x7D
_SHDLC_ESCAPED = {0x7E, 0x7D, 0x11, 0x13}

_SCC1_GET_VERSION = 0xD1
_SCC1_DEVICE_INFO = 0xD0
_SCC1_SENSOR_TYPE = 0x24
_SCC1_SENSOR_ADDRESS = 0x25
_SCC1_I2C_SCAN = 0x29
_SCC1_I2C_TRANSCEIVE = 0x2A

_SHDLC_ERR_DATA_SIZE = 0x01
_SHDLC_ERR_UNKNOWN_COMMAND = 0x02
_SHDLC_ERR_PARAMETER = 0x04
# The vendor packages do not list the SCC1's own error codes; this is the code Sensirion's
# Sensor Bridge (same SHDLC family) uses for an I2C NACK.
_SCC1_ERR_I2C_NACK = 0x29

_GARBAGE_BYTES = 600  # more than the longest SHDLC frame, so the host cannot wait for an end


def _shdlc_checksum(content: bytes) -> int:
    return ~sum(content) & 0xFF


def _shdlc_stuff(content: bytes) -> bytes:
    out = bytearray()
    for byte in content:
        if byte in _SHDLC_ESCAPED:
            out += bytes((_SHDLC_ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def _shdlc_unstuff(stuffed: bytes) -> bytes:
    out = bytearray()
    escape = False
    for byte in stuffed:
        if escape:
            out.append(byte ^ 0x20)
            escape = False
        elif byte == _SHDLC_ESCAPE:
            escape = True
        else:
            out.append(byte)
    return bytes(out)


class SimulatedScc1Cable:
    """A Sensirion SCC1 USB sensor cable with a simulated SLF3S on its I2C bus, on a pty.

    ``port`` is the pseudo-terminal's slave path, to be opened like the cable's ``/dev/ttyUSB0``.
    A daemon thread serves SHDLC frames (0x7E-delimited, byte-stuffed, one's-complement checksum)
    for the commands the SCC1 driver sends, executing I2C transfers against ``device``. Faults:
    ``dropout`` (the cable goes silent) and ``garbage`` (random bytes instead of a reply frame).
    """

    def __init__(
        self,
        device: SimulatedSlf3s,
        *,
        serial_number: str = "SIMSCC1-0001",
        seed: int | None = None,
    ) -> None:
        self.device = device
        self.serial_number = serial_number
        self.dropout = False
        self.garbage = False
        self.sensor_type = 3  # SF06-based flow sensor
        self.sensor_address = device.address
        self._rng = random.Random(seed)
        self._master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        self.port = os.ttyname(self._slave_fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-scc1", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the pseudo-terminal."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=2.0)
        os.close(self._master_fd)
        os.close(self._slave_fd)

    def __enter__(self) -> SimulatedScc1Cable:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _serve(self) -> None:
        pending = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master_fd], [], [], 0.05)
            if not ready:
                continue
            try:
                pending += os.read(self._master_fd, 4096)
            except OSError:
                continue  # no slave side open at the moment
            for frame in self._take_frames(pending):
                reply = self._reply_to(frame)
                if reply:
                    os.write(self._master_fd, reply)

    @staticmethod
    def _take_frames(pending: bytearray) -> list[bytes]:
        """Remove complete frames' contents from ``pending`` (still stuffed)."""
        frames = []
        while True:
            start = pending.find(_SHDLC_FRAME)
            if start < 0:
                pending.clear()
                return frames
            end = pending.find(_SHDLC_FRAME, start + 1)
            if end < 0:
                del pending[:start]
                return frames
            if end == start + 1:  # back-to-back delimiters: the second one starts the frame
                del pending[: start + 1]
                continue
            frames.append(bytes(pending[start + 1 : end]))
            del pending[: end + 1]

    def _reply_to(self, stuffed: bytes) -> bytes | None:
        if self.dropout:
            return None
        if self.garbage:
            return self._rng.randbytes(_GARBAGE_BYTES)
        content = _shdlc_unstuff(stuffed)
        if len(content) < 4:
            return None
        address, command, length = content[0], content[1], content[2]
        data, checksum = content[3:-1], content[-1]
        if length != len(data) or checksum != _shdlc_checksum(content[:-1]):
            return None  # a corrupt request frame is ignored; the host times out
        state, reply = self._execute(command, data)
        miso = bytes((address, command, state, len(reply))) + reply
        delimiter = bytes((_SHDLC_FRAME,))
        return delimiter + _shdlc_stuff(miso + bytes((_shdlc_checksum(miso),))) + delimiter

    def _execute(self, command: int, data: bytes) -> tuple[int, bytes]:
        """Run one SHDLC command; returns (state byte, reply data)."""
        if command == _SCC1_I2C_TRANSCEIVE:
            return self._i2c_transceive(data)
        if command == _SCC1_GET_VERSION and not data:
            return 0, bytes((1, 9, 0, 1, 0, 1, 0))  # firmware 1.9, hardware 1.0, SHDLC 1.0
        if command == _SCC1_DEVICE_INFO and len(data) == 1:
            info = {0x01: "SCC1", 0x03: self.serial_number}.get(data[0])
            if info is None:
                return _SHDLC_ERR_PARAMETER, b""
            return 0, info.encode("ascii") + b"\x00"
        if command == _SCC1_SENSOR_TYPE:
            if data:
                self.sensor_type = data[0]
            return 0, b"" if data else bytes((self.sensor_type,))
        if command == _SCC1_SENSOR_ADDRESS:
            if data:
                self.sensor_address = data[0]
            return 0, b"" if data else bytes((self.sensor_address,))
        if command == _SCC1_I2C_SCAN:
            present = self.device.i2c_read(self.device.address, 0) is not None
            return 0, bytes((self.device.address,)) if present else b""
        return _SHDLC_ERR_UNKNOWN_COMMAND, b""

    def _i2c_transceive(self, data: bytes) -> tuple[int, bytes]:
        """Command 0x2A: address, tx length, rx length, read delay (ms, uint16), tx bytes."""
        if len(data) < 5 or len(data) != 5 + data[1]:
            return _SHDLC_ERR_DATA_SIZE, b""
        address, tx_length, rx_length, read_delay_ms = struct.unpack(">BBBH", data[:5])
        if tx_length and not self.device.i2c_write(address, data[5:]):
            return _SCC1_ERR_I2C_NACK, b""
        if rx_length == 0:
            return 0, b""
        time.sleep(read_delay_ms / 1000.0)
        received = self.device.i2c_read(address, rx_length)
        if received is None:
            return _SCC1_ERR_I2C_NACK, b""
        return 0, received
