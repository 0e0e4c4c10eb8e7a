"""MT-SICS balance client against the simulated balance on a pty, and the reply parser."""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator

import pytest
import serial

from hal.balance import (
    BalanceAbsent,
    BalanceBusy,
    BalanceCommandError,
    BalanceError,
    BalanceOverload,
    BalanceProtocolError,
    BalanceTimeout,
    BalanceUnderload,
    MtSicsBalance,
    Reply,
    WeightReading,
    parse_reply,
)
from hal.config import BalanceConfig
from hal.sim.balance import SimulatedBalance, weight_field
from tests.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(20)


class Pan:
    """The true mass on a simulated pan, changed by the test."""

    def __init__(self, mass_g: float) -> None:
        self.mass_g = mass_g

    def __call__(self) -> float:
        return self.mass_g


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimulatedBalance]]:
    sims: list[SimulatedBalance] = []

    def make(mass_g: Callable[[], float], **kwargs) -> SimulatedBalance:
        kwargs.setdefault("noise_g", 0.0)
        sim = SimulatedBalance(mass_g, **kwargs).start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        sim.close()


_open_clients: list[MtSicsBalance] = []


def connect_to(sim: SimulatedBalance) -> MtSicsBalance:
    """A client on ``sim``, closed after the test."""
    client = MtSicsBalance(sim.port, timeout_s=1.0)
    _open_clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


@pytest.fixture
def connect() -> Iterator[Callable[..., MtSicsBalance]]:
    clients: list[MtSicsBalance] = []

    def open_client(port: str, timeout_s: float = 1.0) -> MtSicsBalance:
        client = MtSicsBalance(port, timeout_s=timeout_s)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


class ScriptedLine:
    """A pty whose far end answers each command line with scripted chunks of bytes."""

    def __init__(self, script: dict[bytes, list[bytes]], chunk_delay_s: float = 0.0) -> None:
        self.script = script
        self.chunk_delay_s = chunk_delay_s
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.port = os.ttyname(self.slave_fd)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        pending = b""
        while not self.stop.is_set():
            if not select.select([self.master_fd], [], [], 0.02)[0]:
                continue
            pending += os.read(self.master_fd, 1024)
            while b"\r\n" in pending:
                line, pending = pending.split(b"\r\n", 1)
                for chunk in self.script.get(line, [b"ES\r\n"]):
                    if self.stop.wait(self.chunk_delay_s):
                        return
                    os.write(self.master_fd, chunk)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        os.close(self.master_fd)
        os.close(self.slave_fd)


class StreamingLine:
    """A pty balance that sends weight lines unprompted while ``streaming`` is on.

    Output leaves one character per 10 bit times at ``baud``, as on a serial line. A stream line
    is queued every ``period_s`` from ``start_after_s`` on, for ``duration_s`` (None: until
    closed). Commands are answered from ``script`` (unknown ones get no answer); commands in
    ``cancels`` switch the stream off, as ``S``, ``SI`` and ``@`` end MT-SICS ``SIR``. With
    ``queued_line`` one more stream line, already queued for output when a command arrives,
    goes out before the answer.
    """

    def __init__(
        self,
        script: dict[bytes, list[bytes]] | None = None,
        *,
        line: bytes = b"S D    5.00000 g\r\n",
        period_s: float = 0.04,
        start_after_s: float = 0.0,
        duration_s: float | None = None,
        cancels: frozenset[bytes] = frozenset(),
        queued_line: bool = False,
        baud: int = 9600,
    ) -> None:
        self.script = script or {}
        self.line = line
        self.period_s = period_s
        self.cancels = cancels
        self.queued_line = queued_line
        self.char_s = 10 / baud
        self.streaming = True
        self.lines_sent = 0
        self.commands: list[bytes] = []
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.port = os.ttyname(self.slave_fd)
        self.stop = threading.Event()
        self.first_line_s = time.monotonic() + start_after_s
        self.last_line_s = math.inf if duration_s is None else self.first_line_s + duration_s
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        pending = b""
        out = bytearray()
        next_line_s = self.first_line_s
        next_char_s = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            on_air = self.streaming and self.first_line_s <= now <= self.last_line_s
            if on_air and now >= next_line_s:
                out += self.line
                self.lines_sent += 1
                next_line_s = max(next_line_s + self.period_s, now)
            if out and now >= next_char_s:
                due = min(len(out), 1 + int((now - next_char_s) / self.char_s))
                os.write(self.master_fd, out[:due])
                del out[:due]
                next_char_s = max(next_char_s + due * self.char_s, now)
            if not select.select([self.master_fd], [], [], 0.002)[0]:
                continue
            pending += os.read(self.master_fd, 1024)
            while b"\r\n" in pending:
                command, pending = pending.split(b"\r\n", 1)
                self.commands.append(command)
                if self.streaming and self.queued_line:
                    end = out.find(b"\n") + 1  # finish the line on the wire, then the queued one
                    del out[end:]
                    out += self.line
                if command in self.cancels:
                    self.streaming = False
                for chunk in self.script.get(command, []):
                    out += chunk

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        os.close(self.master_fd)
        os.close(self.slave_fd)


@pytest.fixture
def streaming() -> Iterator[Callable[..., StreamingLine]]:
    lines: list[StreamingLine] = []

    def make(*args, **kwargs) -> StreamingLine:
        line = StreamingLine(*args, **kwargs)
        lines.append(line)
        return line

    yield make
    for line in lines:
        line.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedLine]]:
    lines: list[ScriptedLine] = []

    def make(script: dict[bytes, list[bytes]], chunk_delay_s: float = 0.0) -> ScriptedLine:
        line = ScriptedLine(script, chunk_delay_s)
        lines.append(line)
        return line

    yield make
    for line in lines:
        line.close()


# -- reading weights ------------------------------------------------------------------------


def test_reads_known_mass_as_stable(make_sim, connect):
    sim = make_sim(lambda: 0.998)
    balance = connect(sim.port)
    assert balance.read_stable() == WeightReading(mass_g=0.998, stable=True, unit="g")
    assert sim.commands == ["S"]


def test_wire_format_is_mt_sics(make_sim):
    """The bytes on the line, seen by a plain serial port: CR LF, 10-character value field."""
    sim = make_sim(lambda: 0.998)
    with serial.Serial(sim.port, 9600, timeout=1) as port:
        port.write(b"S\r\n")
        assert port.read_until(b"\r\n") == b"S S    0.99800 g\r\n"
        port.write(b"I4\r\n")
        assert port.read_until(b"\r\n") == b'I4 A "B123456789"\r\n'


@pytest.mark.parametrize("baud", [None, 1200])
def test_simulated_balance_sends_at_the_serial_line_speed(make_sim, baud):
    """Ten bit times per character (start, 8 data, stop): a reply is never faster than that.

    The default is the balance's default, 9600 baud: about 1 ms per character.
    """
    sim = make_sim(lambda: 0.998) if baud is None else make_sim(lambda: 0.998, baud=baud)
    baud = baud or 9600
    with serial.Serial(sim.port, baud, timeout=2) as port:
        start = time.monotonic()
        port.write(b"I0\r\n")
        received = b""
        while not received.endswith(b'"ZI"\r\n'):
            chunk = port.read_until(b"\r\n")
            assert chunk, f"reply stopped after {received!r}"
            received += chunk
        elapsed_s = time.monotonic() - start
    assert elapsed_s >= 0.95 * len(received) * 10 / baud


@pytest.mark.parametrize("command", [b"XYZ", b"s", b"S 1"])
def test_simulator_answers_unknown_commands_with_syntax_error(make_sim, command):
    sim = make_sim(lambda: 0.998)
    with serial.Serial(sim.port, 9600, timeout=1) as port:
        port.write(command + b"\r\n")
        assert port.read_until(b"\r\n") == b"ES\r\n"


def test_noise_is_seeded_and_small(make_sim, connect):
    masses = []
    for _ in range(2):
        sim = make_sim(lambda: 10.0, noise_g=0.00002, seed=7)
        balance = connect(sim.port)
        masses.append([balance.read_immediate().mass_g for _ in range(5)])
    assert masses[0] == masses[1]
    assert len(set(masses[0])) > 1
    assert all(abs(m - 10.0) < 0.0002 for m in masses[0])


def test_dynamic_until_settled_then_stable(make_sim, connect):
    pan = Pan(1.0)
    sim = make_sim(pan, settle_s=0.4, stable_wait_s=2.0)
    balance = connect(sim.port, timeout_s=3.0)
    assert balance.read_immediate().stable
    pan.mass_g = 1.5
    moved_at = time.monotonic()
    time.sleep(0.05)  # the simulator samples the pan every 10 ms
    moving = balance.read_immediate()
    assert moving == WeightReading(mass_g=1.5, stable=False, unit="g")
    settled = balance.read_stable()
    assert settled == WeightReading(mass_g=1.5, stable=True, unit="g")
    assert time.monotonic() - moved_at > 0.3  # S waited for the load to settle (0.4 s)


@pytest.mark.parametrize(
    ("readability_g", "expected_g", "wire"),
    [
        (0.0001, 0.9984, b"S S     0.9984 g\r\n"),  # 0.1 mg
        (0.001, 0.998, b"S S      0.998 g\r\n"),  # 1 mg
        (0.0002, 0.9984, b"S S     0.9984 g\r\n"),  # 2 digits of 0.1 mg
        (0.005, 1.0, b"S S      1.000 g\r\n"),
    ],
)
def test_readings_are_rounded_to_the_readability(make_sim, readability_g, expected_g, wire):
    sim = make_sim(lambda: 0.99837, readability_g=readability_g)
    with serial.Serial(sim.port, 9600, timeout=1) as port:
        port.write(b"S\r\n")
        assert port.read_until(b"\r\n") == wire
    balance = connect_to(sim)
    assert balance.read_stable().mass_g == pytest.approx(expected_g, abs=1e-12)


def test_readability_must_be_a_whole_number_of_micrograms():
    with pytest.raises(ValueError, match="readability_g"):
        SimulatedBalance(lambda: 0.0, readability_g=0.00000025)


def test_zero_drifts_slowly_until_the_balance_is_zeroed(make_sim):
    clock = ManualClock(100.0)
    sim = make_sim(lambda: 10.0, clock=clock, drift_g_per_h=0.002)
    balance = connect_to(sim)
    assert balance.read_immediate().mass_g == 10.0
    clock.advance(1800.0)  # half an hour
    assert balance.read_immediate().mass_g == pytest.approx(10.001, abs=1e-9)
    clock.advance(3600.0)
    assert balance.read_stable().mass_g == pytest.approx(10.003, abs=1e-9)


def test_zeroing_takes_out_the_drift_so_far(make_sim):
    clock = ManualClock(100.0)
    sim = make_sim(lambda: 1.0, clock=clock, drift_g_per_h=-0.004)
    balance = connect_to(sim)
    clock.advance(900.0)
    balance.zero()
    assert balance.read_stable().mass_g == 0.0
    clock.advance(900.0)
    assert balance.read_stable().mass_g == pytest.approx(-0.001, abs=1e-9)


def test_water_evaporates_from_the_beaker(make_sim):
    clock = ManualClock(100.0)
    pan = Pan(5.0)  # water in the beaker
    sim = make_sim(pan, clock=clock, evaporation_mg_per_h=6.0)
    balance = connect_to(sim)
    assert balance.read_stable().mass_g == 5.0
    clock.advance(360.0)  # a tenth of an hour: 0.6 mg gone
    assert balance.read_stable().mass_g == pytest.approx(4.9994, abs=1e-9)
    pan.mass_g = 6.0  # one more gram pumped in
    clock.advance(1800.0)
    assert balance.read_stable().mass_g == pytest.approx(6.0 - 0.0006 - 0.003, abs=1e-9)


def test_evaporation_stops_when_the_beaker_is_dry(make_sim):
    clock = ManualClock(100.0)
    sim = make_sim(lambda: 0.0001, clock=clock, evaporation_mg_per_h=1.0)
    balance = connect_to(sim)
    clock.advance(36000.0)  # ten hours could take 10 mg, but there is only 0.1 mg
    assert balance.read_stable().mass_g == 0.0


def test_stable_read_is_busy_when_the_load_never_settles(make_sim, connect):
    start = time.monotonic()
    sim = make_sim(lambda: (time.monotonic() - start) * 0.1, settle_s=0.2, stable_wait_s=0.3)
    balance = connect(sim.port, timeout_s=2.0)
    with pytest.raises(BalanceBusy, match="'S I'"):
        balance.read_stable()
    assert not balance.read_immediate().stable


def test_underload_when_the_pan_is_lifted(make_sim, connect):
    sim = make_sim(lambda: -10.0)
    balance = connect(sim.port)
    with pytest.raises(BalanceUnderload, match="'S -'"):
        balance.read_stable()


# -- zero, tare, reset, identification -------------------------------------------------------


def test_zero_makes_readings_net(make_sim, connect):
    pan = Pan(0.998)
    sim = make_sim(pan)
    balance = connect(sim.port)
    balance.zero()
    assert balance.read_stable().mass_g == 0.0
    pan.mass_g = 1.498
    assert balance.read_stable().mass_g == pytest.approx(0.5, abs=1e-9)


def test_zero_immediately_reports_stability(make_sim, connect):
    pan = Pan(0.998)
    sim = make_sim(pan, settle_s=0.5)
    balance = connect(sim.port)
    assert balance.zero_immediately() is True
    pan.mass_g = 1.2
    time.sleep(0.05)
    assert balance.zero_immediately() is False  # zeroed while still moving
    assert balance.read_immediate().mass_g == 0.0


def test_zero_outside_the_zero_range_is_refused(make_sim, connect):
    sim = make_sim(lambda: 50.0)  # zero range of a 220 g balance is 4.4 g
    balance = connect(sim.port)
    with pytest.raises(BalanceOverload, match="'Z \\+'"):
        balance.zero()


def test_tare_returns_the_tare_weight_and_makes_readings_net(make_sim, connect):
    pan = Pan(25.0)  # an empty beaker
    sim = make_sim(pan)
    balance = connect(sim.port)
    assert balance.tare() == WeightReading(mass_g=25.0, stable=True, unit="g")
    assert balance.read_stable().mass_g == 0.0
    pan.mass_g = 25.998  # one mL of water pumped in
    assert balance.read_stable().mass_g == pytest.approx(0.998, abs=1e-9)


def test_reset_clears_tare_and_returns_the_serial_number(make_sim, connect):
    sim = make_sim(lambda: 25.0, serial_number="0123456789")
    balance = connect(sim.port)
    balance.tare()
    assert balance.reset() == "0123456789"
    assert balance.read_stable().mass_g == 25.0


def test_serial_number_and_identity(make_sim, connect):
    sim = make_sim(lambda: 0.0, serial_number="B987654321")
    balance = connect(sim.port)
    assert balance.serial_number() == "B987654321"
    identity = balance.identify()
    assert identity.serial_number == "B987654321"
    assert "220.00000 g" in identity.model
    assert identity.sics_level == "0"
    commands = balance.supported_commands()
    assert {"S", "SI", "Z", "ZI", "T", "@", "I4"} <= set(commands)
    assert sim.commands[-1] == "I0"


def test_weight_field_is_right_aligned_in_ten_characters():
    assert weight_field(0.998, 5) == "   0.99800"
    assert weight_field(-12.3456, 2) == "    -12.35"
    assert weight_field(-0.000001, 5) == "   0.00000"


# -- continuous weights (SIR) -------------------------------------------------------------


def read_lines(port: serial.Serial, seconds: float) -> list[bytes]:
    """Every complete line that arrives on ``port`` within ``seconds``, with its CR LF."""
    received = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        received += port.read(max(1, port.in_waiting))
    return [line + b"\r\n" for line in received.split(b"\r\n")[:-1]]


def test_simulated_balance_repeats_weights_after_sir_until_si(make_sim):
    sim = make_sim(lambda: 0.998, sir_rate_hz=20.0)
    with serial.Serial(sim.port, 9600, timeout=0.05) as port:
        port.write(b"SIR\r\n")
        streamed = read_lines(port, 0.5)
        assert len(streamed) >= 3
        assert set(streamed) == {b"S S    0.99800 g\r\n"}
        port.write(b"I4\r\n")  # other commands are answered between the weights
        assert b'I4 A "B123456789"\r\n' in read_lines(port, 0.3)
        port.write(b"SI\r\n")  # S, SI and @ end SIR
        time.sleep(0.2)
        port.reset_input_buffer()
        assert read_lines(port, 0.3) == []


def test_simulated_balance_repeats_no_faster_than_its_rate(make_sim):
    sim = make_sim(lambda: 0.998, sir_rate_hz=5.0)
    with serial.Serial(sim.port, 9600, timeout=0.05) as port:
        port.write(b"SIR\r\n")
        streamed = read_lines(port, 0.7)
        port.write(b"@\r\n")
    assert 1 <= len(streamed) <= 4  # due at 0, 0.2, 0.4 and 0.6 s


def test_continuous_weights_with_arrival_times(make_sim, connect):
    pan = Pan(0.5)
    sim = make_sim(pan, sir_rate_hz=25.0)
    balance = connect(sim.port, timeout_s=2.0)
    before = time.monotonic()
    with balance.start_continuous() as weights:
        first = [weights.read() for _ in range(3)]
        pan.mass_g = 0.75
        time.sleep(0.1)
        later = [weights.read() for _ in range(8)]
    after = time.monotonic()
    assert sim.commands == ["SIR", "SI"]
    assert all(w.reading == WeightReading(0.5, True, "g") for w in first)
    assert later[-1].mass_g == 0.75
    times = [w.received_s for w in first + later]
    assert before <= times[0] and times == sorted(times) and times[-1] <= after
    assert len(set(times)) > 1
    assert balance.read_stable().mass_g == 0.75  # the balance answers commands again


def test_continuous_weights_iterate_and_keep_the_tare(make_sim, connect):
    pan = Pan(25.0)
    sim = make_sim(pan)
    balance = connect(sim.port)
    balance.tare()
    pan.mass_g = 26.0
    weights = balance.start_continuous()
    masses = []
    for weight in weights:
        masses.append(weight.mass_g)
        if len(masses) == 3:
            final = weights.stop()
    assert len(masses) >= 3  # and what was queued before the stop
    assert set(masses) == {1.0}
    assert final == WeightReading(1.0, True, "g")
    assert not weights.running
    assert balance.read_stable().mass_g == 1.0  # SI ended SIR and the tare stands


def test_other_commands_wait_for_the_stream_to_stop(make_sim, connect):
    sim = make_sim(lambda: 0.998)
    balance = connect(sim.port)
    weights = balance.start_continuous()
    with pytest.raises(BalanceBusy, match="continuous weights"):
        balance.read_immediate()
    with pytest.raises(BalanceBusy, match="continuous weights"):
        balance.start_continuous()
    assert weights.stop(reset=True) is None  # @ ends SIR too (and clears the tare)
    assert sim.commands == ["SIR", "@"]
    assert balance.read_immediate().mass_g == 0.998
    assert weights.stop() is None  # stopping twice is harmless


def test_an_overload_in_the_stream_is_raised_and_the_stream_goes_on(make_sim, connect):
    sim = make_sim(lambda: 0.998)
    balance = connect(sim.port)
    with balance.start_continuous() as weights:
        assert weights.read().mass_g == 0.998
        sim.fault = "overload"
        with pytest.raises(BalanceOverload, match="'S \\+'"):
            for _ in range(20):
                weights.read()
        sim.fault = None
        for _ in range(20):
            with contextlib.suppress(BalanceOverload):
                if weights.read().mass_g == 0.998:
                    break
        else:
            pytest.fail("the stream did not recover")


def test_continuous_weights_start_on_a_balance_already_streaming(streaming, connect):
    """Left in SIR by another program: SIR again simply goes on streaming."""
    line = streaming({b"SIR": [STREAMED]}, cancels=frozenset({b"SI"}), queued_line=True)
    balance = connect(line.port)
    time.sleep(0.1)
    with balance.start_continuous() as weights:
        assert [weights.read().mass_g for _ in range(5)] == [5.0] * 5
    assert line.commands == [b"SIR", b"SI"]


def test_a_balance_without_sir_refuses_to_stream(scripted, connect):
    line = scripted({})  # every command is answered ES
    balance = connect(line.port)
    with pytest.raises(BalanceCommandError, match="ES syntax error"):
        balance.start_continuous()
    with pytest.raises(BalanceCommandError):
        balance.read_immediate()  # not stuck in a stream


@pytest.mark.timeout(10)
def test_a_stream_that_falls_silent_times_out(make_sim, connect):
    sim = make_sim(lambda: 0.998)
    balance = connect(sim.port, timeout_s=0.5)
    weights = balance.start_continuous()
    weights.read()
    sim.fault = "silent"
    with pytest.raises(BalanceTimeout, match="continuous weights"):
        for _ in range(100):
            weights.read()
    sim.fault = None
    balance.close()  # closing ends the stream's reader too
    assert not weights.running


# -- faults -------------------------------------------------------------------------------


@pytest.mark.timeout(5)
@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("silent", BalanceTimeout, "no complete reply"),
        ("garbage", BalanceProtocolError, "not printable ASCII"),
        ("overload", BalanceOverload, "'S \\+'"),
        ("logical_error", BalanceCommandError, "EL logical error"),
        ("transmission_error", BalanceCommandError, "ET transmission error"),
    ],
)
def test_each_fault_gives_its_typed_error_quickly(make_sim, connect, fault, error, message):
    sim = make_sim(lambda: 0.998)
    balance = connect(sim.port, timeout_s=0.5)
    assert balance.read_stable().mass_g == 0.998
    sim.fault = fault
    start = time.monotonic()
    with pytest.raises(error, match=message) as caught:
        balance.read_stable()
    assert time.monotonic() - start < 0.5 + 0.2
    assert sim.port in str(caught.value)
    assert "'S'" in str(caught.value)
    sim.fault = None
    assert balance.read_stable().mass_g == 0.998  # the link recovers


def test_unknown_fault_is_rejected(make_sim):
    sim = make_sim(lambda: 0.0)
    with pytest.raises(ValueError, match="unknown fault"):
        sim.fault = "smoke"


@pytest.mark.timeout(5)
def test_missing_port_is_absent():
    with pytest.raises(BalanceAbsent, match="/dev/does-not-exist"):
        MtSicsBalance("/dev/does-not-exist")


@pytest.mark.timeout(5)
def test_balance_vanishing_mid_session_is_absent(make_sim, connect):
    sim = make_sim(lambda: 0.998)
    balance = connect(sim.port, timeout_s=0.5)
    assert balance.read_stable().stable
    sim.close()
    with pytest.raises(BalanceAbsent):
        balance.read_stable()


def test_from_config(make_sim):
    sim = make_sim(lambda: 0.998)
    with MtSicsBalance.from_config(BalanceConfig(port=sim.port, timeout_s=1.0)) as balance:
        assert balance.timeout_s == 1.0
        assert balance.read_stable().mass_g == 0.998
    with pytest.raises(BalanceAbsent, match="disabled"):
        MtSicsBalance.from_config(BalanceConfig(port=sim.port, enabled=False))


def test_accepts_an_open_serial_object(make_sim):
    sim = make_sim(lambda: 0.998)
    port = serial.Serial(sim.port, 9600, timeout=5)
    with MtSicsBalance(port) as balance:
        assert balance.read_immediate().mass_g == 0.998
    assert not port.is_open


# -- stale input and replies that do not belong -------------------------------------------


@pytest.mark.parametrize(
    "stale",
    [b"S S    5.00000 g\r\n", b"\xff\xfe junk", b"S S    5.0"],
    ids=["old-reply", "line-noise", "half-line"],
)
def test_stale_input_is_discarded_before_a_command(make_sim, stale):
    sim = make_sim(lambda: 0.998)
    port = serial.Serial(sim.port, 9600)
    with MtSicsBalance(port, timeout_s=1.0) as balance:
        sim.send_unsolicited(stale)
        # Opening a second serial on the pty would flush its input, so watch the client's own.
        deadline = time.monotonic() + 2
        while port.in_waiting < len(stale) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert port.in_waiting == len(stale)
        assert balance.read_stable() == WeightReading(mass_g=0.998, stable=True, unit="g")


def test_late_reply_after_a_timeout_is_not_taken_for_the_next_one(scripted, connect):
    line = scripted(
        {b"S": [b"S S    5.00000 g\r\n"], b"SI": [b"S D    1.00000 g\r\n"]}, chunk_delay_s=0.35
    )
    balance = connect(line.port, timeout_s=0.3)
    with pytest.raises(BalanceTimeout):
        balance.read_stable()
    # The S reply turns up late, while the client waits for the line to fall quiet.
    reading = balance.read_immediate(timeout_s=1.5)
    assert reading == WeightReading(mass_g=1.0, stable=False, unit="g")


@pytest.mark.timeout(30)
def test_a_balance_that_keeps_sending_does_not_stall_the_next_call(streaming, connect):
    """After a timeout, weights streaming at 25 Hz must not hold the next call past its deadline.

    The stream runs for 8 s; the call has 0.5 s. It may answer or fail, but promptly.
    """
    line = streaming(start_after_s=0.4, duration_s=8.0)
    balance = connect(line.port, timeout_s=0.3)
    with pytest.raises(BalanceTimeout):
        balance.serial_number()  # nothing answers I4: a timeout, then the stream starts
    start = time.monotonic()
    with contextlib.suppress(BalanceError):
        balance.serial_number(timeout_s=0.5)
    assert time.monotonic() - start < 0.5 + 2.0  # generous: the stream lasts 8 s
    assert line.lines_sent > 0


def test_reply_to_another_command_is_skipped_not_taken(scripted, connect):
    line = scripted({b"S": [b"Z A\r\n"]})
    balance = connect(line.port, timeout_s=0.5)
    with pytest.raises(BalanceTimeout, match=r"skipped 1 line.*'Z A'"):
        balance.read_stable()


STREAMED = b"S D    5.00000 g\r\n"
"""A weight the balance sends unprompted (5 g), never the answer the tests expect."""


def test_replies_are_found_among_unprompted_weights(streaming, connect):
    """Weights streaming at 25 Hz, one of them between each command and its reply."""
    line = streaming(
        {
            b"I4": [b'I4 A "B123456789"\r\n'],
            b"Z": [b"Z A\r\n"],
            b"T": [b"T S    25.00000 g\r\n"],
        },
        queued_line=True,
    )
    balance = connect(line.port, timeout_s=2.0)
    for _ in range(3):
        assert balance.serial_number() == "B123456789"
        balance.zero()
        assert balance.tare() == WeightReading(mass_g=25.0, stable=True, unit="g")
    assert line.lines_sent > 0


def test_weight_reads_return_their_own_reply_not_a_streamed_weight(streaming, connect):
    """A balance left sending weights (SIR): S and SI end the stream, and their reply is last.

    The stream's line already queued for output goes out after the command, before the reply,
    and looks exactly like a reply to S or SI.
    """
    reply = b"S S    0.99800 g\r\n"
    line = streaming(
        {b"SI": [reply], b"S": [reply]},
        cancels=frozenset({b"S", b"SI", b"@"}),
        queued_line=True,
    )
    balance = connect(line.port, timeout_s=2.0)
    for read in [balance.read_immediate, balance.read_stable] * 2:
        line.streaming = True
        time.sleep(0.1)  # let the stream run
        assert read() == WeightReading(mass_g=0.998, stable=True, unit="g")


def test_a_stream_seen_by_one_call_makes_the_next_weight_read_careful(streaming, connect):
    """The I4 exchange skips a streamed weight; SI sent in the stream's next gap is not fooled."""
    line = streaming(
        {b"I4": [b'I4 A "B123456789"\r\n'], b"SI": [b"S S    0.99800 g\r\n"]},
        period_s=0.1,
        queued_line=True,
    )
    balance = connect(line.port, timeout_s=1.5)
    for _ in range(2):
        assert balance.serial_number() == "B123456789"
        with pytest.raises(BalanceProtocolError, match="kept sending weights"):
            balance.read_immediate()


def test_weight_read_refuses_to_guess_when_the_stream_never_stops(streaming, connect):
    line = streaming({b"SI": [b"S S    0.99800 g\r\n"]}, queued_line=True)
    balance = connect(line.port, timeout_s=1.5)
    time.sleep(0.1)
    with pytest.raises(BalanceProtocolError, match="kept sending weights"):
        balance.read_immediate()


def test_dynamic_reply_to_stable_read_is_a_protocol_error(scripted, connect):
    line = scripted({b"S": [b"S D    1.00000 g\r\n"]})
    balance = connect(line.port)
    with pytest.raises(BalanceProtocolError, match="unexpected status 'D'"):
        balance.read_stable()


@pytest.mark.parametrize("reply", [b"S I\r\n", b"SI I\r\n"])
def test_busy_replies(scripted, connect, reply):
    line = scripted({b"SI": [reply]})
    balance = connect(line.port)
    with pytest.raises(BalanceBusy):
        balance.read_immediate()


def test_milligram_reply_is_converted_to_grams(scripted, connect):
    line = scripted({b"S": [b"S S   998.000 mg\r\n"]})
    balance = connect(line.port)
    assert balance.read_stable() == WeightReading(mass_g=0.998, stable=True, unit="mg")


def test_non_mass_unit_is_refused_clearly(scripted, connect):
    line = scripted({b"S": [b"S S    0.03520 oz\r\n"]})
    balance = connect(line.port)
    with pytest.raises(BalanceProtocolError, match=r"unit 'oz'.*set the balance to weigh in g"):
        balance.read_stable()


@pytest.mark.timeout(5)
def test_deadline_is_total_not_per_byte(scripted, connect):
    """A balance dribbling bytes without ever ending the line must not hold the caller."""
    line = scripted({b"S": [b"S"] + [b" "] * 200}, chunk_delay_s=0.02)
    balance = connect(line.port, timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(BalanceTimeout, match="received so far b'S "):
        balance.read_stable()
    assert time.monotonic() - start < 0.5 + 0.2


@pytest.mark.timeout(5)
def test_lf_only_line_end_is_not_accepted(scripted, connect):
    line = scripted({b"S": [b"S S    1.00000 g\n"]})
    balance = connect(line.port, timeout_s=0.3)
    with pytest.raises(BalanceProtocolError, match="0x0A"):
        balance.read_stable()


def test_every_error_is_a_balance_error():
    for error in (
        BalanceAbsent,
        BalanceTimeout,
        BalanceCommandError,
        BalanceBusy,
        BalanceOverload,
        BalanceUnderload,
        BalanceProtocolError,
    ):
        assert issubclass(error, BalanceError)


# -- reply parser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"S S     100.00 g",
            Reply("S", "S", ("100.00", "g"), WeightReading(100.0, True, "g")),
        ),
        (b"S D     99.98 g", Reply("S", "D", ("99.98", "g"), WeightReading(99.98, False, "g"))),
        (
            b"S S    -12.34567 g",
            Reply("S", "S", ("-12.34567", "g"), WeightReading(-12.34567, True, "g")),
        ),
        (b"S S 0.5 kg", Reply("S", "S", ("0.5", "kg"), WeightReading(500.0, True, "kg"))),
        (b"T S   12.34 g", Reply("T", "S", ("12.34", "g"), WeightReading(12.34, True, "g"))),
        (b"S I", Reply("S", "I")),
        (b"S +", Reply("S", "+")),
        (b"S -", Reply("S", "-")),
        (b"Z A", Reply("Z", "A")),
        (b"ZI D", Reply("ZI", "D")),
        (b"ES", Reply("ES", "")),
        (b"ET", Reply("ET", "")),
        (b"EL", Reply("EL", "")),
        (b'I4 A "0123456789"', Reply("I4", "A", ('"0123456789"',))),
        (b'I2 A "XS205 220.00000 g"', Reply("I2", "A", ('"XS205 220.00000 g"',))),
        (b'I0 B 0 "S"', Reply("I0", "B", ("0", '"S"'))),
        (b'I1 A "0" "2.00" "" "" ""', Reply("I1", "A", ('"0"', '"2.00"', '""', '""', '""'))),
    ],
)
def test_parse_valid_reply_lines(line, expected):
    assert parse_reply(line) == expected


def test_quoted_text_may_hold_bytes_up_to_255():
    """MT-SICS text is any byte from 32 to 255: a German balance names itself a Waage."""
    reply = parse_reply(b'I2 A "W\xe4gezelle XS205 220.00000 g"')
    assert reply.texts == ("W\xe4gezelle XS205 220.00000 g",)
    assert reply.texts[0].startswith("Wäge")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'I4 A "01\x0123"', "0x01"),
        (b'I4 A "01\x7f23"', "0x7F"),
        (b'I4 A "01\x1b23"', "0x1B"),
        (b'I4 \xc4 "0123"', "0xC4"),
    ],
)
def test_control_bytes_and_high_bytes_outside_text_are_refused(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse_reply(line)


def test_identity_with_text_beyond_ascii(scripted, connect):
    line = scripted(
        {
            b"I1": [b'I1 A "01" "2.20" "2.20" "" ""\r\n'],
            b"I2": [b'I2 A "Pr\xe4zisionswaage 220.00000 g"\r\n'],
            b"I3": [b'I3 A "2.10 10.28.0.493.142"\r\n'],
            b"I4": [b'I4 A "B\xe4123"\r\n'],
        }
    )
    balance = connect(line.port)
    identity = balance.identify()
    assert identity.model == "Präzisionswaage 220.00000 g"
    assert identity.serial_number == "Bä123"


def test_simulated_balance_names_itself_in_latin_1(make_sim, connect):
    sim = make_sim(lambda: 0.0, model="Präzisionswaage")
    balance = connect(sim.port)
    assert balance.identify().model == "Präzisionswaage 220.00000 g"


def test_parsed_texts_are_unquoted():
    assert parse_reply(b'I2 A "XS205 220.00000 g"').texts == ("XS205 220.00000 g",)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"", "empty"),
        (b"S", "no status"),
        (b"S X 1.0 g", "not an MT-SICS status"),
        (b"s S 1.0 g", "not an MT-SICS identifier"),
        (b" S S 1.0 g", "starts with a space"),
        (b"S S", "a value and a unit"),
        (b"S S 1.0", "a value and a unit"),
        (b"S S 1.0 g extra", "a value and a unit"),
        (b"S S 1,0 g", "not a weight value"),
        (b"S S 1.0.0 g", "not a weight value"),
        (b"S S nan g", "not a weight value"),
        (b"S S 1.0 lb", "unit 'lb'"),
        (b"S A 1.0 g", "not a weight status"),
        (b"S I 1.0 g", "carries no fields"),
        (b"S S 1.0 g\r", "0x0D"),
        (b"S S \xb5g", "0xB5"),
        (b"S S 1.0\x00 g", "0x00"),
        (b'I4 A "0123', "unterminated"),
        (b'I4 A "01"23', "no space after"),
        (b"E", "no status"),
        (b"ESX", "no status"),
    ],
)
def test_parse_malformed_reply_lines(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse_reply(line)


def test_weight_reading_refuses_units_other_than_mass():
    with pytest.raises(ValueError, match="unit 'ct'"):
        WeightReading(mass_g=1.0, stable=True, unit="ct")
