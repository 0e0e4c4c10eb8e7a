"""Mettler Toledo laboratory balance spoken to in MT-SICS over a serial line.

MT-SICS is a line protocol: the host sends an uppercase ASCII command ended by CR LF; the balance
answers with one line (``I0`` with several) ended by CR LF, starting with the command's identifier
and a status, e.g. ``S S     100.00 g`` (a stable 100 g) or ``S D      99.98 g`` (still moving).
The gravimetric flow test weighs the pumped fluid with it, so every call here has a deadline and
every reply is parsed strictly: a calibration must never continue on a misread weight.

A balance may also send without being asked: weights repeated after ``SIR`` (how a long flow test
samples the mass, see :meth:`MtSicsBalance.start_continuous`), a stream left running by another
program, or a late reply after a timeout. Each reply is therefore matched to its command: lines
that began before the command went out, or that carry another identifier, are skipped.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self

import serial

if TYPE_CHECKING:
    from hal.config import BalanceConfig

try:  # pyserial's POSIX backend lets termios errors out of reset_input_buffer on a dead port
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - not on POSIX
    _TermiosError = OSError

_PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, _TermiosError)

TERMINATOR = b"\r\n"
MAX_LINE_BYTES = 256
"""Longer than any MT-SICS reply this client asks for; a longer run without CR LF is garbage."""

POLL_S = 0.05
"""Serial read timeout per poll; the deadline of a whole call is enforced around it."""

LATE_REPLY_GRACE_S = 0.25
"""After a timeout, how long the line must stay quiet before the next command is sent."""

MAX_DISCARD_S = 0.3
"""Longest wait for a quiet line before a command (never more than half the call's budget):
a balance that keeps sending (streaming weights) must not stall the caller."""

MAX_DISCARD_BYTES = 4096
"""Stale input read and dropped before a command; beyond it the OS input buffer is flushed."""

STREAM_QUIET_S = 0.3
"""How long the line must stay quiet after a weight line before it is taken as the reply to
``S`` or ``SI`` while the balance sends weights unprompted (longer than the period of the
slowest ``SIR`` stream, about 4 lines a second)."""

UNIT_TO_G: dict[str, float] = {"g": 1.0, "mg": 1e-3, "kg": 1e3}
"""Mass units a balance may report in, and the factor that turns them into grams."""

WEIGHT_IDENTS = frozenset({"S", "T"})
"""Reply identifiers whose ``S``/``D`` status is followed by a weight value and a unit."""

MAX_BUFFERED_WEIGHTS = 100_000
"""Continuous weights kept for a reader that falls behind (over an hour at 25 per second); the
oldest go first and are counted in :attr:`ContinuousWeights.dropped`."""

UNPROMPTED_MEMORY_S = 2.0
"""After unprompted output was last seen, how long ``S`` and ``SI`` still treat the balance as
one that may be streaming (a stream line may not be on the wire when the next call starts)."""

STREAM_IDENTS = frozenset({"S"})
"""Identifiers of the weight lines a balance sends unprompted (``SIR``, ``SR``, continuous
output); they look exactly like the replies to ``S`` and ``SI``."""

TEXT_ENCODING = "latin-1"
"""Code page of the bytes 128 to 255 a balance may send in quoted text (MT-SICS allows 32 to 255;
most balances use ISO 8859-1 or a close Windows code page)."""

ERROR_REPLIES = {
    "ES": "syntax error (command not recognised)",
    "ET": "transmission error (parity, break or a character the balance could not read)",
    "EL": "logical error (command not executable now, or parameter out of range)",
}

_IDENT_RE = re.compile(r"[A-Z][A-Z0-9]*")
_STATUSES = frozenset("SDABI+-")
_VALUE_RE = re.compile(r"[+-]?\d+(\.\d+)?")


class BalanceError(Exception):
    """Anything that went wrong talking to the balance."""


class BalanceAbsent(BalanceError):
    """The serial port does not exist, cannot be opened, or went away (cable pulled)."""


class BalanceTimeout(BalanceError):
    """No complete reply line arrived before the call's deadline."""


class BalanceCommandError(BalanceError):
    """The balance refused the command: ``ES`` syntax, ``ET`` transmission or ``EL`` logical."""


class BalanceBusy(BalanceError):
    """Status ``I``: the balance could not execute now (busy, or it never became stable)."""


class BalanceOverload(BalanceError):
    """Status ``+``: load above the weighing capacity (or above the zero or tare range)."""


class BalanceUnderload(BalanceError):
    """Status ``-``: load below the zero range (pan lifted) or below the zero or tare range."""


class BalanceProtocolError(BalanceError):
    """A reply that is not MT-SICS, cannot be parsed, or does not belong to the command sent."""


@dataclass(frozen=True)
class WeightReading:
    """One weight read off the balance.

    ``mass_g`` is the net mass on the pan in grams (after zero and tare), converted from whatever
    unit the balance reported; ``unit`` is that reported unit. ``stable`` is the balance's own
    verdict that the reading has stopped moving.
    """

    mass_g: float
    stable: bool
    unit: str = "g"

    def __post_init__(self) -> None:
        if self.unit not in UNIT_TO_G:
            raise ValueError(
                f"unit {self.unit!r} is not a mass unit this rig converts to grams "
                f"(supported: {', '.join(UNIT_TO_G)}); set the balance to weigh in g"
            )


@dataclass(frozen=True)
class TimedWeight:
    """A weight from the balance's continuous output (``SIR``) and when its line arrived.

    ``received_s`` is the client's clock (monotonic seconds by default) when the line's CR LF was
    read, by a thread that does nothing else, so a slow consumer does not shift it.
    """

    reading: WeightReading
    received_s: float

    @property
    def mass_g(self) -> float:
        return self.reading.mass_g

    @property
    def stable(self) -> bool:
        return self.reading.stable


@dataclass(frozen=True)
class BalanceIdentity:
    """What the balance says it is (``I1``, ``I2``, ``I3``, ``I4``)."""

    sics_level: str
    model: str
    software_version: str
    serial_number: str


@dataclass(frozen=True)
class Reply:
    """One MT-SICS reply line split into identifier, status and the fields after it.

    ``fields`` are the raw tokens (quoted text keeps its quotes); ``texts`` are the quoted ones
    unquoted; ``weight`` is set for weight replies (``S S``, ``S D``, ``T S``). Error replies
    (``ES``, ``ET``, ``EL``) have an empty status.
    """

    ident: str
    status: str
    fields: tuple[str, ...] = ()
    weight: WeightReading | None = None
    line: str = field(default="", compare=False)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(f[1:-1] for f in self.fields if f.startswith('"'))


def _tokenise(text: str) -> list[str]:
    """Split on runs of spaces, keeping ``"quoted text"`` (which may hold spaces) as one token."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos] == " ":
            if pos == 0:
                raise ValueError("line starts with a space")
            pos += 1
            continue
        if text[pos] == '"':
            end = text.find('"', pos + 1)
            if end < 0:
                raise ValueError("unterminated quoted text")
            end += 1
        else:
            end = pos
            while end < len(text) and text[end] not in ' "':
                end += 1
        if end < len(text) and text[end] != " ":
            raise ValueError(f"no space after token {text[pos:end]!r}")
        tokens.append(text[pos:end])
        pos = end
    return tokens


def parse_reply(line: bytes, *, encoding: str = TEXT_ENCODING) -> Reply:
    """Parse one reply line (without its CR LF) strictly; raise ValueError saying what is wrong.

    Quoted text may hold any byte from 32 to 255 (MT-SICS), decoded with ``encoding``; the rest of
    the line must be printable ASCII. Control bytes (below 32, and 127) are refused everywhere.
    """
    quoted = False
    for index, byte in enumerate(line):
        if byte == 0x22:
            quoted = not quoted
        if 0x20 <= byte <= 0x7E or (quoted and byte >= 0x80):
            continue
        where = "in quoted text" if quoted else "outside quoted text"
        raise ValueError(
            f"byte 0x{byte:02X} at position {index} is not printable ASCII ({where}; text "
            "may hold bytes 32 to 255 except 127)"
        )
    try:
        text = line.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"text is not {encoding}: {exc}") from exc
    if text in ERROR_REPLIES:
        return Reply(ident=text, status="", line=text)
    if not text:
        raise ValueError("empty line")
    tokens = _tokenise(text)
    if not _IDENT_RE.fullmatch(tokens[0]):
        raise ValueError(f"{tokens[0]!r} is not an MT-SICS identifier")
    if len(tokens) < 2:
        raise ValueError(f"no status after identifier {tokens[0]!r}")
    ident, status, fields = tokens[0], tokens[1], tuple(tokens[2:])
    if status not in _STATUSES:
        raise ValueError(f"{status!r} is not an MT-SICS status")
    if ident not in WEIGHT_IDENTS:
        return Reply(ident=ident, status=status, fields=fields, line=text)
    if status in "I+-":
        if fields:
            raise ValueError(f"status {status!r} carries no fields, got {' '.join(fields)!r}")
        return Reply(ident=ident, status=status, line=text)
    if status not in "SD":
        raise ValueError(f"status {status!r} is not a weight status")
    if len(fields) != 2:
        raise ValueError(f"a weight reply has a value and a unit, got {' '.join(fields)!r}")
    value, unit = fields
    if not _VALUE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a weight value")
    if unit not in UNIT_TO_G:
        raise ValueError(
            f"unit {unit!r} is not a mass unit this rig converts to grams "
            f"(supported: {', '.join(UNIT_TO_G)}); set the balance to weigh in g"
        )
    weight = WeightReading(mass_g=float(value) * UNIT_TO_G[unit], stable=status == "S", unit=unit)
    return Reply(ident=ident, status=status, fields=fields, weight=weight, line=text)


def _drop_complete_lines(buffer: bytearray) -> None:
    """Remove every complete line from ``buffer``, keeping a partial last line."""
    cut = buffer.rfind(b"\n")
    if cut >= 0:
        del buffer[: cut + 1]


class MtSicsBalance:
    """A Mettler Toledo balance on a serial port, spoken to in MT-SICS.

    ``port`` is a device path (opened here at ``baud``, 8 data bits, no parity, 1 stop bit) or an
    already open ``serial.Serial``, which this object then owns. Each call sends one command,
    waits at most ``timeout_s`` in total for its reply, and raises a :class:`BalanceError`
    subclass for anything but the expected answer. Calls from several threads are serialised.
    Quoted text is decoded with ``text_encoding``. :meth:`start_continuous` streams weights
    (``SIR``), stamped on arrival with ``clock``; other commands wait until it is stopped.
    """

    def __init__(
        self,
        port: str | serial.Serial,
        *,
        baud: int = 9600,
        timeout_s: float = 2.0,
        text_encoding: str = TEXT_ENCODING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        "".encode(text_encoding)  # LookupError now for an unknown code page, not at a reply
        self.timeout_s = timeout_s
        self.text_encoding = text_encoding
        self._clock = clock
        self._lock = threading.Lock()
        self._stream: ContinuousWeights | None = None
        self._rx = bytearray()
        self._foreign = 0  # leading bytes of _rx received before the command went out
        self._synced = False  # opening the port flushed its input, perhaps in mid-line
        self._unprompted_at = -math.inf  # when unprompted output was last seen (monotonic s)
        self._timed_out = False
        if isinstance(port, str):
            self.port_name = port
            try:
                self._serial = serial.Serial(
                    port=port,
                    baudrate=baud,
                    bytesize=serial.EIGHTBITS,
                    parity=serial.PARITY_NONE,
                    stopbits=serial.STOPBITS_ONE,
                    timeout=POLL_S,
                    write_timeout=timeout_s,
                )
            except _PORT_ERRORS as exc:
                raise BalanceAbsent(f"balance port {port}: cannot open ({exc})") from exc
        else:
            self._serial = port
            self.port_name = port.port or repr(port)
            try:
                if not port.is_open:
                    port.open()
                port.timeout = POLL_S
            except _PORT_ERRORS as exc:
                raise BalanceAbsent(f"balance port {self.port_name}: cannot open ({exc})") from exc

    @classmethod
    def from_config(cls, config: BalanceConfig) -> Self:
        """The balance described by the ``[balance]`` table of rig.toml."""
        if not config.enabled:
            raise BalanceAbsent(f"balance port {config.port}: disabled in config ([balance])")
        return cls(config.port, baud=config.baud, timeout_s=config.timeout_s)

    # -- commands ---------------------------------------------------------------------------

    def read_stable(self, *, timeout_s: float | None = None) -> WeightReading:
        """Net weight once the balance is stable (``S``); BalanceBusy if it never settles."""
        reply = self._transact("S", ("S",), ("S",), timeout_s)
        return self._weight_of("S", reply)

    def read_immediate(self, *, timeout_s: float | None = None) -> WeightReading:
        """Net weight right now, stable or not (``SI``)."""
        reply = self._transact("SI", ("S", "SI"), ("S", "D"), timeout_s)
        return self._weight_of("SI", reply)

    def zero(self, *, timeout_s: float | None = None) -> None:
        """Set a new zero point once stable (``Z``); this also clears any tare."""
        self._transact("Z", ("Z",), ("A",), timeout_s)

    def zero_immediately(self, *, timeout_s: float | None = None) -> bool:
        """Set a new zero point now (``ZI``); True if the balance was stable when it did."""
        reply = self._transact("ZI", ("ZI",), ("S", "D"), timeout_s)
        return reply.status == "S"

    def tare(self, *, timeout_s: float | None = None) -> WeightReading:
        """Tare the load once stable (``T``); returns the tare weight now subtracted."""
        reply = self._transact("T", ("T",), ("S",), timeout_s)
        return self._weight_of("T", reply)

    def reset(self, *, timeout_s: float | None = None) -> str:
        """Cancel pending commands and clear tare as after power-on (``@``); the serial number."""
        reply = self._transact("@", ("I4",), ("A",), timeout_s)
        return self._single_text("@", reply)

    def serial_number(self, *, timeout_s: float | None = None) -> str:
        """The balance's serial number (``I4``)."""
        reply = self._transact("I4", ("I4",), ("A",), timeout_s)
        return self._single_text("I4", reply)

    def identify(self, *, timeout_s: float | None = None) -> BalanceIdentity:
        """MT-SICS level (``I1``), model and capacity (``I2``), software (``I3``), serial number."""
        level = self._transact("I1", ("I1",), ("A",), timeout_s)
        if not level.texts:
            raise self._protocol_error("I1", level, "no level in the reply")
        model = self._single_text("I2", self._transact("I2", ("I2",), ("A",), timeout_s))
        software = self._single_text("I3", self._transact("I3", ("I3",), ("A",), timeout_s))
        return BalanceIdentity(
            sics_level=level.texts[0],
            model=model,
            software_version=software,
            serial_number=self.serial_number(timeout_s=timeout_s),
        )

    def supported_commands(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """The commands the balance implements (``I0``, one ``I0 B`` line each, last ``I0 A``)."""
        commands: list[str] = []
        with self._lock:
            self._refuse_while_streaming("I0")
            deadline, unprompted = self._start("I0", timeout_s)
            while True:
                reply = self._receive("I0", ("I0",), ("A", "B"), deadline, unprompted)
                if len(reply.fields) != 2 or len(reply.texts) != 1:
                    raise self._protocol_error("I0", reply, "expected a level and a command")
                commands.append(reply.texts[0])
                if reply.status == "A":
                    return tuple(commands)

    def start_continuous(self, *, timeout_s: float | None = None) -> ContinuousWeights:
        """Start the balance sending immediate weights repeatedly (``SIR``); read them from the
        returned stream, in order, each stamped with its arrival time.

        The first weight (the reply to ``SIR``) must arrive within ``timeout_s``. Until the
        stream is stopped (:meth:`ContinuousWeights.stop`: ``SI`` ends ``SIR`` and keeps the
        tare, ``@`` resets the balance) every other call raises :class:`BalanceBusy`.
        """
        with self._lock:
            self._refuse_while_streaming("SIR")
            deadline, unprompted = self._start("SIR", timeout_s)
            first: TimedWeight | BalanceError
            try:
                reply = self._receive(
                    "SIR", ("S",), ("S", "D"), deadline, unprompted, starts_stream=True
                )
                first = TimedWeight(self._weight_of("SIR", reply), self._clock())
            except (BalanceOverload, BalanceUnderload) as error:  # streaming, out of range
                first = error
            stream = ContinuousWeights(self, first)
            self._stream = stream
            stream._reader.start()
            return stream

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the serial port (safe to call twice); a stream's reader ends, unstopped."""
        stream = self._stream
        if stream is not None:
            stream._halt()
        with self._lock, contextlib.suppress(*_PORT_ERRORS):
            self._stream = None
            self._serial.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MtSicsBalance({self.port_name!r}, timeout_s={self.timeout_s})"

    # -- wire -------------------------------------------------------------------------------

    def _transact(
        self,
        command: str,
        idents: tuple[str, ...],
        statuses: tuple[str, ...],
        timeout_s: float | None,
    ) -> Reply:
        with self._lock:
            self._refuse_while_streaming(command)
            deadline, unprompted = self._start(command, timeout_s)
            return self._receive(command, idents, statuses, deadline, unprompted)

    def _refuse_while_streaming(self, command: str) -> None:
        if self._stream is not None:
            raise BalanceBusy(
                f"balance port {self.port_name}: command {command!r} not sent: continuous "
                "weights (SIR) are running; stop them first"
            )

    def _stop_continuous(
        self, stream: ContinuousWeights, reset: bool, timeout_s: float | None
    ) -> WeightReading | None:
        """End ``stream``: its reader first, then ``SI`` (or ``@``) ends SIR on the balance."""
        stream._halt()
        with self._lock:
            if self._stream is not stream:
                return None  # already stopped
            self._stream = None
            if reset:
                deadline, _ = self._start("@", timeout_s)
                self._receive("@", ("I4",), ("A",), deadline, True)
                return None
            # SI's reply looks like the streamed weights; it is the last before the line is quiet.
            deadline, _ = self._start("SI", timeout_s)
            return self._weight_of("SI", self._receive("SI", ("S",), ("S", "D"), deadline, True))

    def _read_stream(self, stream: ContinuousWeights) -> None:
        """The stream's reader thread: every SIR line, stamped when its CR LF arrives."""
        while not stream._halting.is_set():
            try:
                got = self._read_line("SIR", time.monotonic() + POLL_S)
            except BalanceAbsent as error:
                stream._put(error)
                return
            except BalanceError as error:  # line noise: report it, keep listening
                stream._put(error)
                continue
            if got is None:
                continue
            received_s = self._clock()
            line, foreign = got
            if not foreign:
                stream._put(self._stream_item(line, received_s))

    def _stream_item(self, line: bytes, received_s: float) -> TimedWeight | BalanceError:
        try:
            reply = parse_reply(line, encoding=self.text_encoding)
        except ValueError as exc:
            return BalanceProtocolError(
                f"balance port {self.port_name}: streamed line {line!r} is not MT-SICS: {exc}"
            )
        where = f"balance port {self.port_name}: continuous weights (SIR) got {reply.line!r}"
        if reply.ident in ERROR_REPLIES:
            return BalanceCommandError(f"{where}: {reply.ident} {ERROR_REPLIES[reply.ident]}")
        if reply.ident not in STREAM_IDENTS:
            return BalanceProtocolError(f"{where}: not a weight")
        if reply.status == "I":
            return BalanceBusy(f"{where}: no weight now (balance busy)")
        if reply.status == "+":
            return BalanceOverload(f"{where}: overload (above capacity)")
        if reply.status == "-":
            return BalanceUnderload(f"{where}: underload (below the zero range)")
        assert reply.weight is not None  # S and D carry one
        return TimedWeight(reply.weight, received_s)

    def _start(self, command: str, timeout_s: float | None) -> tuple[float, bool]:
        """Discard stale input and send the command.

        Returns the call's deadline (monotonic seconds) and whether the balance had been sending
        unprompted (stale replies, streamed weights) before the command went out.
        """
        budget_s = self.timeout_s if timeout_s is None else timeout_s
        if not budget_s > 0:
            raise ValueError(f"timeout_s must be positive, got {budget_s}")
        deadline = time.monotonic() + budget_s
        try:
            if self._discard_input(
                min(deadline, time.monotonic() + min(MAX_DISCARD_S, budget_s / 2))
            ):
                self._unprompted_at = time.monotonic()
            unprompted = time.monotonic() - self._unprompted_at < UNPROMPTED_MEMORY_S
            self._serial.write(command.encode("ascii") + TERMINATOR)
            self._serial.flush()
        except serial.SerialTimeoutException as exc:
            raise BalanceTimeout(
                f"balance port {self.port_name}: command {command!r} could not be sent "
                f"within {budget_s:g} s"
            ) from exc
        except _PORT_ERRORS as exc:
            raise BalanceAbsent(
                f"balance port {self.port_name}: command {command!r} failed ({exc})"
            ) from exc
        return deadline, unprompted

    def _discard_input(self, until: float) -> bool:
        """Drop what was received before the command: a reply must belong to the command sent.

        After a timeout the late reply may still be on its way, so wait for a short silence. The
        wait ends at ``until`` (monotonic seconds) however much keeps arriving, and at most
        ``MAX_DISCARD_BYTES`` are read before the OS input buffer is flushed instead, so a balance
        streaming weights cannot hold the caller beyond its deadline. A line still arriving then
        (its start was received before the command went out) is kept, marked as not a reply.
        Returns True if anything had been received unprompted.
        """
        now = time.monotonic()
        quiet_until = now + (LATE_REPLY_GRACE_S if self._timed_out else 0.0)
        self._timed_out = False
        pending = self._rx  # left over from the previous exchange
        found = bool(pending)
        boundary_known = self._synced  # False while input may have been flushed mid-line
        self._synced = True
        _drop_complete_lines(pending)
        if pending or not boundary_known:  # give the end of a partial line a moment to arrive
            quiet_until = max(quiet_until, now + POLL_S)
        dropped = 0
        while True:
            now = time.monotonic()
            waiting = self._serial.in_waiting
            if waiting:
                found = True
                if dropped + waiting > MAX_DISCARD_BYTES:
                    self._serial.reset_input_buffer()
                    pending.clear()
                    boundary_known = False
                else:
                    data = self._serial.read(waiting)
                    dropped += len(data)
                    pending.extend(data)
                    boundary_known = boundary_known or b"\n" in data
                    _drop_complete_lines(pending)
                quiet_until = max(quiet_until, now + POLL_S)
            elif now >= quiet_until:
                # Quiet for a while: the end of a partial line is not coming any more.
                pending.clear()
                boundary_known = True
                break
            if now >= until:
                break
            time.sleep(0.005)
        waiting = self._serial.in_waiting  # what arrived since is older than the command too
        if waiting and dropped + waiting <= MAX_DISCARD_BYTES:
            pending.extend(self._serial.read(waiting))
            found = True
        self._foreign = len(pending) if boundary_known else max(1, len(pending))
        return found

    def _receive(
        self,
        command: str,
        idents: tuple[str, ...],
        statuses: tuple[str, ...],
        deadline: float,
        unprompted: bool,
        *,
        starts_stream: bool = False,
    ) -> Reply:
        """The reply to ``command``: the next line with one of its reply identifiers.

        Lines that began before the command went out and lines with other identifiers are
        skipped (unprompted output). Weight lines a balance streams look exactly like replies to
        ``S`` and ``SI``; while the balance sends unprompted, those two end the stream (MT-SICS),
        so their reply is the last weight line before the line falls quiet. A command that
        ``starts_stream`` (SIR) takes the first weight line: any of them is a weight of now.
        """
        skipped: list[bytes] = []
        candidate: Reply | None = None
        candidate_at = 0.0
        superseded = 0
        while True:
            until = deadline
            if candidate is not None:
                until = min(deadline, candidate_at + STREAM_QUIET_S)
            got = self._read_line(command, until)
            if got is None:
                if candidate is not None and until < deadline:
                    return self._accept(command, candidate, statuses)
                self._timed_out = True
                raise self._timeout_error(command, candidate, superseded, skipped)
            line, foreign = got
            if foreign:
                skipped.append(line)
                unprompted, self._unprompted_at = True, time.monotonic()
                continue
            try:
                reply = parse_reply(line, encoding=self.text_encoding)
            except ValueError as exc:
                if unprompted:  # the rest of a streamed line whose start was dropped
                    skipped.append(line)
                    continue
                raise BalanceProtocolError(
                    f"balance port {self.port_name}: reply {line!r} to command {command!r} is "
                    f"not MT-SICS: {exc}"
                ) from exc
            if reply.ident in ERROR_REPLIES:
                where = f"balance port {self.port_name}: command {command!r} got {reply.line!r}"
                raise BalanceCommandError(f"{where}: {reply.ident} {ERROR_REPLIES[reply.ident]}")
            if reply.ident not in idents:
                skipped.append(line)
                unprompted, self._unprompted_at = True, time.monotonic()
                continue
            if unprompted and reply.ident in STREAM_IDENTS and not starts_stream:
                if reply.status == "D" and "D" not in statuses:
                    skipped.append(line)  # S never answers D: a streamed weight
                    continue
                if candidate is not None:
                    superseded += 1
                    self._unprompted_at = time.monotonic()
                    skipped.append(candidate.line.encode("latin-1"))
                candidate, candidate_at = reply, time.monotonic()
                continue
            return self._accept(command, reply, statuses)

    def _accept(self, command: str, reply: Reply, statuses: tuple[str, ...]) -> Reply:
        """The reply, or the typed error its status stands for."""
        where = f"balance port {self.port_name}: command {command!r} got {reply.line!r}"
        if reply.status == "I":
            raise BalanceBusy(f"{where}: not executable now (busy, or not stable in time)")
        if reply.status == "+":
            raise BalanceOverload(f"{where}: overload (above capacity or zero/tare range)")
        if reply.status == "-":
            raise BalanceUnderload(f"{where}: underload (below zero range or zero/tare range)")
        if reply.status not in statuses:
            raise self._protocol_error(command, reply, f"unexpected status {reply.status!r}")
        return reply

    def _timeout_error(
        self, command: str, candidate: Reply | None, superseded: int, skipped: list[bytes]
    ) -> BalanceError:
        where = f"balance port {self.port_name}: command {command!r}"
        if candidate is not None and superseded:
            return BalanceProtocolError(
                f"{where}: the balance kept sending weights after it ({superseded + 1} lines, "
                f"last {candidate.line!r}) until the deadline, so its reply cannot be told from "
                "unprompted output; stop the balance's continuous output (SIR or its menu)"
            )
        if candidate is not None:
            return BalanceTimeout(
                f"{where}: got {candidate.line!r}, but the line did not stay quiet for "
                f"{STREAM_QUIET_S:g} s before the deadline to show it was the reply and not a "
                "streamed weight"
            )
        detail = ""
        if skipped:
            plural = "s" if len(skipped) != 1 else ""
            detail = (
                f"; skipped {len(skipped)} line{plural} that were not its reply "
                f"(last {skipped[-1]!r})"
            )
        return BalanceTimeout(
            f"{where}: no complete reply within the deadline (received so far "
            f"{bytes(self._rx)!r}){detail}"
        )

    def _read_line(self, command: str, until: float) -> tuple[bytes, bool] | None:
        """The next line without its CR LF, and whether it began before the command was sent.

        None when ``until`` (monotonic seconds) passes first. A line that began before the
        command went out may be a fragment (its start was discarded) and ends at any LF; any
        other line must be printable ASCII ended by CR LF, or BalanceProtocolError is raised.
        """
        drained = False
        while True:
            if self._foreign > 0:
                end = self._rx.find(b"\n")
                if end >= 0:
                    line = bytes(self._rx[:end]).removesuffix(b"\r")
                    del self._rx[: end + 1]
                    self._foreign = max(0, self._foreign - (end + 1))
                    return line, True
                if len(self._rx) > MAX_LINE_BYTES:  # noise before the command: not a reply
                    self._rx.clear()
                    self._foreign = 1
            else:
                end = self._rx.find(TERMINATOR)
                if end >= 0:
                    line = bytes(self._rx[:end])
                    del self._rx[: end + len(TERMINATOR)]
                    return line, False
                self._check_partial_line(command)
            expired = time.monotonic() >= until
            if expired and drained:
                return None
            try:
                if expired:  # what arrived while this thread was not running still counts
                    drained = True
                    chunk = self._serial.read(self._serial.in_waiting)
                else:
                    chunk = self._serial.read(max(1, self._serial.in_waiting))
            except _PORT_ERRORS as exc:
                raise BalanceAbsent(
                    f"balance port {self.port_name}: reading the reply to {command!r} failed "
                    f"({exc})"
                ) from exc
            self._rx.extend(chunk)

    def _check_partial_line(self, command: str) -> None:
        """Raise BalanceProtocolError if the unterminated bytes received cannot become a line."""
        # No CR LF left in the buffer, so any LF, or a CR not last, is a broken line end. Bytes
        # above 127 may be text (the parser checks that they are quoted); control bytes never.
        last = len(self._rx) - 1
        junk = next(
            (
                b
                for i, b in enumerate(self._rx)
                if not (0x20 <= b <= 0x7E or b >= 0x80 or (b == 0x0D and i == last))
            ),
            None,
        )
        if junk is None and len(self._rx) <= MAX_LINE_BYTES:
            return
        with contextlib.suppress(*_PORT_ERRORS):  # show the rest of the burst too
            self._rx.extend(self._serial.read(self._serial.in_waiting))
        received = bytes(self._rx)
        self._rx.clear()
        reason = (
            f"control byte 0x{junk:02X} is not printable ASCII nor a CR LF line end"
            if junk is not None
            else f"no CR LF within {MAX_LINE_BYTES} bytes"
        )
        raise BalanceProtocolError(
            f"balance port {self.port_name}: reply {received!r} to command {command!r} "
            f"is not MT-SICS: {reason}"
        )

    def _weight_of(self, command: str, reply: Reply) -> WeightReading:
        if reply.weight is None:
            raise self._protocol_error(command, reply, "no weight in the reply")
        return reply.weight

    def _single_text(self, command: str, reply: Reply) -> str:
        if len(reply.fields) != 1 or len(reply.texts) != 1:
            raise self._protocol_error(command, reply, "expected one quoted text")
        return reply.texts[0]

    def _protocol_error(self, command: str, reply: Reply, reason: str) -> BalanceProtocolError:
        return BalanceProtocolError(
            f"balance port {self.port_name}: reply {reply.line!r} to command {command!r}: {reason}"
        )


class ContinuousWeights:
    """Weights a balance sends repeatedly (MT-SICS ``SIR``): see ``start_continuous``.

    A reader thread stamps each line as it arrives and queues it, so the consumer may fall behind
    without shifting the times. :meth:`read` (or iterating) returns the weights in order and
    raises, in their place, the errors the balance streamed (overload, busy, garbage). Iterating
    ends once the stream is stopped and drained. Use it as a context manager to stop it.
    """

    def __init__(self, balance: MtSicsBalance, first: TimedWeight | BalanceError) -> None:
        self._balance = balance
        self._items: deque[TimedWeight | BalanceError] = deque([first])
        self._ready = threading.Condition()
        self._halting = threading.Event()
        self._ended = False
        self.dropped = 0
        """Weights discarded, oldest first, because the reader fell behind by more than
        ``MAX_BUFFERED_WEIGHTS``."""
        self._reader = threading.Thread(
            target=balance._read_stream, args=(self,), name="balance-sir", daemon=True
        )

    @property
    def running(self) -> bool:
        """True until the stream is stopped (or its port failed)."""
        return not self._ended

    def read(self, timeout_s: float | None = None) -> TimedWeight:
        """The next weight, waiting at most ``timeout_s`` (default: the balance's timeout)."""
        budget_s = self._balance.timeout_s if timeout_s is None else timeout_s
        with self._ready:
            if not self._ready.wait_for(lambda: self._items or self._ended, budget_s):
                raise BalanceTimeout(
                    f"balance port {self._balance.port_name}: no weight within {budget_s:g} s "
                    "from the continuous weights (SIR)"
                )
            if not self._items:
                raise BalanceError(
                    f"balance port {self._balance.port_name}: continuous weights stopped"
                )
            item = self._items.popleft()
        if isinstance(item, BalanceError):
            raise item
        return item

    def __iter__(self) -> Iterator[TimedWeight]:
        return self

    def __next__(self) -> TimedWeight:
        with self._ready:
            if self._ended and not self._items:
                raise StopIteration
        return self.read()

    def stop(self, *, reset: bool = False, timeout_s: float | None = None) -> WeightReading | None:
        """End the stream: ``SI`` (its reply, the last weight, is returned; tare and zero stay)
        or, with ``reset``, ``@`` (the balance resets as after power-on; None). Weights already
        queued stay readable. Safe to call twice."""
        return self._balance._stop_continuous(self, reset, timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
        else:  # already failing: stop if possible, but do not hide the first error
            with contextlib.suppress(BalanceError):
                self.stop()

    def _put(self, item: TimedWeight | BalanceError) -> None:
        with self._ready:
            if len(self._items) >= MAX_BUFFERED_WEIGHTS:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            if isinstance(item, BalanceAbsent):
                self._ended = True
            self._ready.notify_all()

    def _halt(self) -> None:
        """Stop the reader thread and mark the stream ended (no command is sent)."""
        self._halting.set()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        with self._ready:
            self._ended = True
            self._ready.notify_all()
