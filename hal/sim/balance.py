"""A simulated Mettler Toledo balance answering MT-SICS on a pseudo-terminal.

The simulated bench hands :class:`SimulatedBalance` a function giving the true mass on the pan
(the fluid pumped into the beaker); the balance adds noise, tracks stability, applies zero and
tare, and answers on the slave side of a pty at the serial line's pace. After ``SIR`` it sends
the immediate weight repeatedly until ``S``, ``SI`` or ``@``. The client opens
``SimulatedBalance.port`` exactly as it opens ``/dev/ttyUSB1`` on the Pi, so the driver under test
is the real one.
"""

from __future__ import annotations

import math
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self, get_args

Fault = Literal["silent", "garbage", "overload", "logical_error", "transmission_error"]
"""Misbehaviours that can be switched on at runtime (``None`` for a healthy balance)."""

FAULTS: tuple[Fault, ...] = get_args(Fault)

COMMANDS = ("@", "I0", "I1", "I2", "I3", "I4", "S", "SI", "SIR", "T", "Z", "ZI")
"""The MT-SICS commands the simulated balance implements; anything else is answered ``ES``."""

COMMAND_LEVELS = {"SIR": "1"}
"""MT-SICS level of each command listed by ``I0`` (level 0 unless named here)."""

ENDS_REPEAT = frozenset({"S", "SI", "@"})
"""Commands that end ``SIR`` (MT-SICS: it is overwritten and cancelled by S, SI, SR and @)."""

_TICK_S = 0.01
"""How often the server samples the mass while idle, to notice movement between commands."""

BITS_PER_CHARACTER = 10
"""Start bit, 8 data bits, stop bit: 8N1, as the balance's serial line is configured."""


def character_time_s(baud: int | None) -> float:
    """Time one character takes on the serial line at ``baud`` (0 for None: no line modelled)."""
    if baud is None:
        return 0.0
    if not baud > 0:
        raise ValueError(f"baud must be positive, got {baud}")
    return BITS_PER_CHARACTER / baud


TEXT_ENCODING = "latin-1"
"""Code page of the simulated balance's text (MT-SICS text holds bytes 32 to 255)."""


def format_line(*tokens: str) -> bytes:
    """One MT-SICS reply line: tokens separated by a space, ended by CR LF."""
    return " ".join(tokens).encode(TEXT_ENCODING) + b"\r\n"


def weight_field(mass_g: float, decimals: int) -> str:
    """A weight value as the balance prints it: fixed decimals, right-aligned in 10 characters."""
    value = round(mass_g, decimals)
    if value == 0:
        value = 0.0  # never print "-0.00000"
    return f"{value:>10.{decimals}f}"


def readability_decimals(readability_g: float) -> int:
    """Decimals a balance of readability d shows: 0.0001 g -> 4, 0.0002 g -> 4, 0.001 g -> 3.

    d must be a whole number of micrograms (at most six decimals), from 1 µg to 1 g.
    """
    if not (1e-6 <= readability_g <= 1.0 and math.isfinite(readability_g)):
        raise ValueError(f"readability_g must be 0.000001 to 1 g, got {readability_g}")
    for decimals in range(7):
        if abs(round(readability_g, decimals) - readability_g) <= 1e-12:
            return decimals
    raise ValueError(f"readability_g must be a whole number of micrograms, got {readability_g}")


def quantise(mass_g: float, readability_g: float) -> float:
    """``mass_g`` rounded to the nearest multiple of the readability d, as the balance shows it."""
    return round(mass_g / readability_g) * readability_g


def quoted(text: str) -> str:
    """Text as it appears in identification replies, between double quotes."""
    return f'"{text}"'


def _check_text(name: str, text: str) -> None:
    """Refuse text a balance cannot send between quotes: control characters, quotes, non-latin-1."""
    try:
        encoded = text.encode(TEXT_ENCODING)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{name} must be {TEXT_ENCODING} text: {exc}") from exc
    if b'"' in encoded or any(b < 0x20 or 0x7F <= b < 0xA0 for b in encoded):
        raise ValueError(f"{name} cannot contain double quotes or control characters")


class SimulatedBalance:
    """An analytical balance (default 220 g capacity, 0.01 mg readability) behind a pty.

    ``mass_g`` returns the true gross mass on the pan in grams; it is called from the server
    thread. Readings get Gaussian noise of ``noise_g`` standard deviation. The balance counts as
    stable once the true mass has stayed within noise (or one display digit) for ``settle_s``
    seconds of ``clock``; ``S``, ``Z`` and ``T`` wait up to ``stable_wait_s`` for that and answer
    busy (``I``) otherwise, so a simulated ``clock`` must keep advancing while they wait.
    Zeroing is allowed within ``zero_range_g`` of the power-on zero (default 2 % of capacity);
    a load below that range reads as underload. Commands are served one at a time, in order.
    Replies leave at the serial line's pace, 10 bit times per character at ``baud`` (about 1 ms
    at 9600; None sends at once). ``SIR`` repeats the immediate weight ``sir_rate_hz`` times a
    second (real time) until ``S``, ``SI`` or ``@``; other commands are answered in between.

    What a calibration has to cope with: readings are rounded to the readability
    ``readability_g`` (d; default one unit of the last of ``decimals`` digits, 0.01 mg), the zero
    drifts by ``drift_g_per_h`` (from power-on, on ``clock``; zeroing takes out the drift so far),
    and water evaporates from the beaker at ``evaporation_mg_per_h`` (``mass_g`` is taken to be
    water: evaporation stops when none is left).
    """

    def __init__(
        self,
        mass_g: Callable[[], float],
        *,
        noise_g: float = 0.00002,
        settle_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        serial_number: str = "B123456789",
        capacity_g: float = 220.0,
        decimals: int = 5,
        zero_range_g: float | None = None,
        stable_wait_s: float = 1.0,
        model: str = "SIM-XS205",
        baud: int | None = 9600,
        sir_rate_hz: float = 10.0,
        readability_g: float | None = None,
        drift_g_per_h: float = 0.0,
        evaporation_mg_per_h: float = 0.0,
    ) -> None:
        if not (noise_g >= 0 and settle_s >= 0 and stable_wait_s >= 0):
            raise ValueError("noise_g, settle_s and stable_wait_s must be non-negative")
        if not (evaporation_mg_per_h >= 0 and math.isfinite(evaporation_mg_per_h)):
            raise ValueError(f"evaporation_mg_per_h must be >= 0, got {evaporation_mg_per_h}")
        if not math.isfinite(drift_g_per_h):
            raise ValueError(f"drift_g_per_h must be finite, got {drift_g_per_h}")
        if not (sir_rate_hz > 0 and math.isfinite(sir_rate_hz)):
            raise ValueError(f"sir_rate_hz must be positive, got {sir_rate_hz}")
        if not (capacity_g > 0 and math.isfinite(capacity_g)):
            raise ValueError(f"capacity_g must be positive, got {capacity_g}")
        if not 0 <= decimals <= 6:
            raise ValueError(f"decimals must be 0..6, got {decimals}")
        if readability_g is None:
            readability_g = 10.0**-decimals
        else:
            decimals = readability_decimals(readability_g)
        for name, text in (("serial_number", serial_number), ("model", model)):
            _check_text(name, text)
        self._mass_fn = mass_g
        self.noise_g = noise_g
        self.settle_s = settle_s
        self._clock = clock
        self._rng = random.Random(seed)
        self.serial_number = serial_number
        self.capacity_g = capacity_g
        self.decimals = decimals
        self.readability_g = readability_g
        self.drift_g_per_h = drift_g_per_h
        self.evaporation_mg_per_h = evaporation_mg_per_h
        self._powered_on_s = clock()
        self._evaporated_g = 0.0
        self._evaporated_until_s = self._powered_on_s
        self.zero_range_g = 0.02 * capacity_g if zero_range_g is None else zero_range_g
        self.stable_wait_s = stable_wait_s
        self.model = model
        self.character_time_s = character_time_s(baud)
        self.sir_rate_hz = sir_rate_hz
        self._repeat_next_s: float | None = None  # when the next SIR weight is due (real time)
        self.overrun_bytes = 0
        self._stability_band_g = max(4 * noise_g, readability_g)
        self._zero_g = 0.0
        self._tare_g = 0.0
        self._reference_g: float | None = None
        self._last_change_s = -math.inf
        self._fault: Fault | None = None
        self._commands: list[str] = []
        self._commands_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self._wake_fds: tuple[int, int] | None = None
        self._port: str | None = None

    # -- control ----------------------------------------------------------------------------

    @property
    def port(self) -> str:
        """Device path of the pty slave, to open like a serial port."""
        if self._port is None:
            raise RuntimeError("the simulated balance is not started")
        return self._port

    @property
    def fault(self) -> Fault | None:
        """The misbehaviour in force, or None for a healthy balance."""
        return self._fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
        self._fault = fault

    @property
    def commands(self) -> list[str]:
        """Every command line received so far, without its CR LF."""
        with self._commands_lock:
            return list(self._commands)

    def send_unsolicited(self, data: bytes) -> None:
        """Write raw bytes to the line, as a balance left in a send-repeatedly mode would."""
        self._write(data)

    def start(self) -> Self:
        """Open the pty pair and start answering commands in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("the simulated balance is already started")
        master_fd, slave_fd = os.openpty()
        # Raw: no CR -> LF translation, no echo, no output post-processing; CR LF passes as is.
        tty.setraw(slave_fd)
        # A host that stops reading loses characters (receiver overrun); the balance never waits.
        os.set_blocking(master_fd, False)
        self._master_fd, self._slave_fd = master_fd, slave_fd
        self._wake_fds = os.pipe()
        self._port = os.ttyname(slave_fd)
        self._stop.clear()
        self._observe()  # a load already at rest counts as settled; a moving one must settle
        self._thread = threading.Thread(target=self._serve, name="sim-balance", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the server thread and close the pty (safe to call twice)."""
        self._stop.set()
        if self._wake_fds is not None:
            os.write(self._wake_fds[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._write_lock:
            for fd in (self._master_fd, self._slave_fd, *(self._wake_fds or ())):
                if fd is not None:
                    os.close(fd)
            self._master_fd = self._slave_fd = self._wake_fds = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- server -----------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._master_fd is not None and self._wake_fds is not None
        master_fd, wake_fd = self._master_fd, self._wake_fds[0]
        pending = bytearray()
        while not self._stop.is_set():
            wait_s = _TICK_S
            if self._repeat_next_s is not None:
                wait_s = min(wait_s, max(0.0, self._repeat_next_s - time.monotonic()))
            readable, _, _ = select.select([master_fd, wake_fd], [], [], wait_s)
            self._repeat()
            if master_fd not in readable:
                self._observe()
                continue
            try:
                pending.extend(os.read(master_fd, 1024))
            except BlockingIOError:
                continue
            except OSError:  # slave side hung up for good
                return
            while (end := pending.find(b"\r\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 2]
                with self._commands_lock:
                    self._commands.append(line.decode("ascii", "replace"))
                reply = self._answer(line)
                if reply:
                    self._write(reply)

    def _write(self, data: bytes) -> None:
        """Send ``data`` at the serial line's pace: each character after its 10 bit times.

        Characters due are written together, so the wait between writes is a few ms at most;
        one writer at a time, as on one UART. Closing the balance cuts a write short.
        """
        with self._write_lock:
            if self._master_fd is None:
                raise RuntimeError("the simulated balance is not started")
            char_s = self.character_time_s
            if char_s <= 0:
                self._put(data)
                return
            start = time.monotonic()
            sent = 0
            while sent < len(data):
                due = min(len(data), int((time.monotonic() - start) / char_s))
                if due > sent:
                    self._put(data[sent:due])
                    sent = due
                elif self._stop.wait(start + (sent + 1) * char_s - time.monotonic()):
                    return

    def _put(self, data: bytes) -> None:
        """Hand bytes to the pty; what the host's full input buffer cannot take is lost."""
        assert self._master_fd is not None
        try:
            written = os.write(self._master_fd, data)
        except BlockingIOError:
            written = 0
        self.overrun_bytes += len(data) - written

    def _repeat(self) -> None:
        """Send the next SIR weight if one is due (a silent balance sends nothing)."""
        due_s = self._repeat_next_s
        now = time.monotonic()
        if due_s is None or now < due_s:
            return
        period_s = 1.0 / self.sir_rate_hz
        # A late line does not bring a burst of catch-up lines: the balance keeps its rate.
        self._repeat_next_s = due_s + period_s if now - due_s < period_s else now + period_s
        if self._fault == "silent":
            return
        self._write(self._garbage() if self._fault == "garbage" else self._weight_reply("S"))

    def _answer(self, line: bytes) -> bytes:
        """The reply bytes to one command line (empty when the balance stays silent)."""
        if line.decode("latin-1") in ENDS_REPEAT:
            self._repeat_next_s = None
        fault = self._fault
        if fault == "silent":
            return b""
        if fault == "garbage":
            return self._garbage()
        if fault == "logical_error":
            return format_line("EL")
        if fault == "transmission_error" or any(b > 0x7E for b in line):
            return format_line("ET")
        command = line.decode("ascii")
        if command not in COMMANDS:
            return format_line("ES")
        if command == "S":
            return self._weight_reply("S", wait=True)
        if command == "SI":
            return self._weight_reply("S", wait=False)
        if command == "SIR":  # the first weight now, then one every 1/sir_rate_hz seconds
            self._repeat_next_s = time.monotonic() + 1.0 / self.sir_rate_hz
            return self._weight_reply("S", wait=False)
        if command in ("Z", "ZI"):
            return self._zero_reply(command, wait=command == "Z")
        if command == "T":
            return self._tare_reply()
        if command == "@":
            self._zero_g = self._tare_g = 0.0
            return format_line("I4", "A", quoted(self.serial_number))
        return self._identification(command)

    def _identification(self, command: str) -> bytes:
        if command == "I0":
            return b"".join(
                format_line(
                    "I0",
                    "A" if n == len(COMMANDS) - 1 else "B",
                    COMMAND_LEVELS.get(c, "0"),
                    quoted(c),
                )
                for n, c in enumerate(COMMANDS)
            )
        if command == "I1":
            return format_line("I1", "A", quoted("0"), quoted("2.00"), *[quoted("")] * 3)
        if command == "I2":
            capacity = weight_field(self.capacity_g, self.decimals).strip()
            return format_line("I2", "A", quoted(f"{self.model} {capacity} g"))
        if command == "I3":
            return format_line("I3", "A", quoted("1.00 simulated"))
        return format_line("I4", "A", quoted(self.serial_number))

    def _shown(self, mass_g: float) -> str:
        """A mass as the balance prints it: rounded to the readability, in the weight field."""
        return weight_field(quantise(mass_g, self.readability_g), self.decimals)

    def _weight_reply(self, ident: str, *, wait: bool = False) -> bytes:
        status, gross_g = self._weigh(wait=wait)
        if status not in "SD":
            return format_line(ident, status)
        net_g = gross_g - self._zero_g - self._tare_g
        return format_line(ident, status, self._shown(net_g), "g")

    def _zero_reply(self, ident: str, *, wait: bool) -> bytes:
        status, gross_g = self._weigh(wait=wait)
        if status not in "SD":
            return format_line(ident, status)
        if abs(gross_g) > self.zero_range_g:  # outside the zero range around power-on zero
            return format_line(ident, "+" if gross_g > 0 else "-")
        self._zero_g, self._tare_g = gross_g, 0.0
        return format_line(ident, "A" if ident == "Z" else status)

    def _tare_reply(self) -> bytes:
        status, gross_g = self._weigh(wait=True)
        if status not in "SD":
            return format_line("T", status)
        self._tare_g = gross_g - self._zero_g
        return format_line("T", "S", self._shown(self._tare_g), "g")

    def _weigh(self, *, wait: bool) -> tuple[str, float]:
        """Status (``S``, ``D``, ``I``, ``+``, ``-``) and the noisy gross mass in grams."""
        true_g, stable = self._observe()
        status = self._range_status(true_g)
        if status is None and wait and not stable:
            start_s = self._clock()
            while not stable:
                if self._clock() - start_s >= self.stable_wait_s or self._stop.wait(0.005):
                    return "I", 0.0
                true_g, stable = self._observe()
            status = self._range_status(true_g)
        if status is not None:
            return status, 0.0
        gross_g = true_g + (self._rng.gauss(0.0, self.noise_g) if self.noise_g else 0.0)
        gross_g += self.drift_g_per_h * (self._clock() - self._powered_on_s) / 3600.0
        return ("S" if stable else "D"), gross_g

    def _range_status(self, true_g: float) -> str | None:
        load_g = 2 * self.capacity_g if self._fault == "overload" else true_g - self._zero_g
        if load_g > self.capacity_g:
            return "+"
        if load_g < -self.zero_range_g:
            return "-"
        return None

    def _observe(self) -> tuple[float, bool]:
        """Sample the true mass; True when it has not moved beyond noise for settle_s."""
        now_s = self._clock()
        true_g = self._water_left(float(self._mass_fn()), now_s)
        if self._reference_g is None:
            self._reference_g = true_g
        elif abs(true_g - self._reference_g) > self._stability_band_g:
            self._reference_g, self._last_change_s = true_g, now_s
        return true_g, now_s - self._last_change_s >= self.settle_s

    def _water_left(self, supplied_g: float, now_s: float) -> float:
        """The mass on the pan: what was supplied less the water evaporated up to ``now_s``."""
        if self.evaporation_mg_per_h > 0:
            elapsed_h = max(0.0, now_s - self._evaporated_until_s) / 3600.0
            lost_g = self._evaporated_g + self.evaporation_mg_per_h * elapsed_h / 1000.0
            self._evaporated_g = min(lost_g, max(supplied_g, 0.0))  # no more than the water
        self._evaporated_until_s = now_s
        return supplied_g - self._evaporated_g

    def _garbage(self) -> bytes:
        """Line noise: bytes no MT-SICS reply contains, ended by CR LF."""
        length = self._rng.randint(3, 16)
        noise = bytes(self._rng.randrange(0x80, 0x100) for _ in range(length))
        return noise + b"\r\n"
