"""Power-on self-test: every part of the bench answers and is plausible before delivery starts.

``itbrig selftest`` runs it on its own; the rig service runs it after building the bench and
before its delivery loop starts, and a failure blocks delivery with the ``self_test_failed``
alarm naming each failed part. The checks talk to the parts through the same hal drivers the
service uses, so on the simulated bench they run against the simulated parts (pins, switches,
the flow sensor on its mock I2C channel, the balance on its pseudo-terminal) and each can be
made to fail there as on a Pi.

Checks, in order:

- ``pins``: every pin of ``[pins]`` is claimed by its device (open, on the right GPIO);
- ``enable``: the stepper driver's ENABLE is released (motor not energised, no step rate);
- ``switches``: both limit switches and the emergency stop read, and plausibly: both limits
  closed at once is impossible (a short or a missing pull-up), a pressed emergency stop fails;
- ``flow_sensor``: the sensor answers with an SLF3S-0600F product id and, with the pump
  stopped, reads zero flow within ``selftest.zero_flow_tolerance_ul_per_min``;
- ``balance``: the balance identifies itself (``I1``–``I4``) and reports a stable weight;
- ``buzzer`` and ``led``: the buzzer sounds once and the LED shows red, green and blue once;
- ``books``: the data directory takes a synced write and has ``selftest.min_free_mb`` free.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpiozero import Device

from hal.balance import BalanceError
from hal.bench import Bench, build_bench
from hal.flow_sensor import SLF3S_0600F_PRODUCT_FAMILY, FlowSensorError
from hal.pins import default_hal_kind, pi_model
from rig.common.inputs import InputError
from rig.service.config import RigConfig, SelfTestConfig, load_config

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

PARTS: dict[str, str] = {
    "pins": "GPIO pins",
    "enable": "stepper driver ENABLE",
    "switches": "limit switches and emergency stop",
    "flow_sensor": "flow sensor",
    "balance": "balance",
    "buzzer": "buzzer",
    "led": "status LED",
    "books": "books (data directory)",
}
"""Every check's name and the part it names in messages and alarms."""

FLOW_SAMPLE_PERIOD_S = 0.02
FIRST_RESULT_WAIT_S = 0.02
"""The SLF3S gives its first result 12 ms after the start command."""
BUZZER_TEST_HZ = 880.0
DEFAULT_DATA_DIR = Path("data")

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: which, whether it passed, and what was found."""

    name: str
    passed: bool
    detail: str

    @property
    def part(self) -> str:
        return PARTS[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class SelfTestReport:
    """Every check's result, in the order they ran."""

    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.to_dict() for check in self.checks]}

    def failure_message(self) -> str:
        """One line naming each failed part and what was wrong with it."""
        return "self-test failed: " + "; ".join(
            f"{check.part}: {check.detail}" for check in self.failures
        )


# -- the checks ----------------------------------------------------------------------------------


def _pin_devices(bench: Bench) -> dict[str, Device]:
    """The device that must hold each function's pin (names as in ``PinsConfig.assignments``)."""
    drive = bench.drive
    # gpiozero's RGBLED keeps its three PWMLEDs in _leds (empty once closed).
    red, green, blue = bench.led._leds or (None, None, None)
    devices: dict[str, Any] = {
        "step": drive.step,
        "dir": drive.direction,
        "enable": drive.enable,
        "microstep.m0": drive.m0,
        "microstep.m1": drive.m1,
        "microstep.m2": drive.m2,
        "limit_full": bench.limits.full,
        "limit_empty": bench.limits.empty,
        "estop": bench.estop,
        "buzzer": bench.buzzer,
        "led_red": red,
        "led_green": green,
        "led_blue": blue,
        "pinch_valve": bench.pinch_valve,
        "leak_valve": bench.leak_valve,
    }
    return devices


def check_pins(bench: Bench) -> CheckResult:
    """Every configured pin is claimed by its device: open, and on the GPIO the config names."""
    problems: list[str] = []
    assignments = bench.config.pins.assignments()
    devices = _pin_devices(bench)
    for name, number in assignments:
        device = devices.get(name)
        pin = None if device is None or device.closed else device.pin
        if pin is None:
            problems.append(f"{name} (BCM {number}) is not claimed (its device is closed)")
        elif pin.info.name != f"GPIO{number}":
            problems.append(f"{name} claims {pin.info.name}, not GPIO{number} as configured")
    if problems:
        return CheckResult("pins", False, "; ".join(problems))
    listed = ", ".join(f"{name} {number}" for name, number in assignments)
    return CheckResult("pins", True, f"{len(assignments)} pins claimed (BCM {listed})")


def check_enable(bench: Bench) -> CheckResult:
    """The motor is released (ENABLE inactive) and no step rate is commanded."""
    if bench.drive.is_enabled:
        return CheckResult(
            "enable", False,
            f"ENABLE (BCM {bench.config.pins.enable}) is active: the motor is energised before "
            "delivery has started",
        )  # fmt: skip
    rate = bench.stepper.rate_steps_per_s
    if rate:
        return CheckResult("enable", False, f"the step generator runs at {rate:g} steps/s")
    return CheckResult("enable", True, "ENABLE released (motor not energised), no step rate")


def check_switches(bench: Bench) -> CheckResult:
    """Both limit switches and the emergency stop read, and their states are possible."""
    pins = bench.config.pins
    try:
        at_full = bench.limits.at_full
        at_empty = bench.limits.at_empty
        estop = bench.estop.is_pressed
    except Exception as error:  # a dead pin must fail the check, not the service
        return CheckResult("switches", False, f"cannot read the switches ({_describe(error)})")
    states = (
        f"full-end switch {'closed' if at_full else 'open'}, "
        f"empty-end switch {'closed' if at_empty else 'open'}, "
        f"emergency stop {'pressed' if estop else 'released'}"
    )
    problems = []
    if at_full and at_empty:
        problems.append(
            f"both limit switches read closed (BCM {pins.limit_full} and {pins.limit_empty}); "
            "the plunger cannot be at both ends: look for a shorted cable or a missing pull-up"
        )
    if estop:
        problems.append(f"the emergency stop (BCM {pins.estop}) is pressed; release it")
    if problems:
        return CheckResult("switches", False, "; ".join(problems) + f" ({states})")
    note = "; the syringe is at its empty end: refill it" if at_empty else ""
    return CheckResult("switches", True, states + note)


def check_flow_sensor(bench: Bench, settings: SelfTestConfig, sleep: Sleep) -> CheckResult:
    """The sensor identifies as an SLF3S-0600F and reads zero flow with the pump stopped."""
    sensor = bench.flow_sensor
    try:
        sensor.stop()  # the product id can only be read while the sensor is idle
        product_id, serial_number = sensor.identify()
        if product_id >> 8 != SLF3S_0600F_PRODUCT_FAMILY:
            return CheckResult(
                "flow_sensor", False,
                f"product id 0x{product_id:08X} is not an SLF3S-0600F "
                f"(0x{SLF3S_0600F_PRODUCT_FAMILY:06X}xx); its flow scale differs",
            )  # fmt: skip
        sensor.start()
        try:
            sleep(FIRST_RESULT_WAIT_S)
            flows = []
            for index in range(settings.zero_flow_samples):
                if index:
                    sleep(FLOW_SAMPLE_PERIOD_S)
                flows.append(sensor.read().flow_ul_per_min)
        finally:
            sensor.stop()
    except FlowSensorError as error:
        return CheckResult("flow_sensor", False, str(error))
    mean = sum(flows) / len(flows)
    tolerance = settings.zero_flow_tolerance_ul_per_min
    found = (
        f"SLF3S-0600F product 0x{product_id:08X} serial {serial_number}; with the pump stopped "
        f"it reads {mean:+.2f} µL/min (mean of {len(flows)}, tolerance ±{tolerance:g})"
    )
    if abs(mean) > tolerance:
        return CheckResult(
            "flow_sensor", False,
            f"{found}: flow through a stopped pump (a leak, free flow or siphoning) or a "
            "sensor offset",
        )  # fmt: skip
    return CheckResult("flow_sensor", True, found)


def check_balance(bench: Bench, settings: SelfTestConfig) -> CheckResult:
    """The balance identifies itself and reports a stable weight (skipped when not fitted)."""
    balance = bench.balance
    if balance is None:
        if bench.config.balance.enabled:
            reason = bench.balance_error or "no balance was opened"
            return CheckResult("balance", False, reason)
        return CheckResult("balance", True, "not fitted ([balance] enabled = false): skipped")
    try:
        identity = balance.identify()
        weight = balance.read_stable(timeout_s=settings.balance_stable_timeout_s)
    except BalanceError as error:
        return CheckResult("balance", False, str(error))
    return CheckResult(
        "balance", True,
        f"{identity.model} serial {identity.serial_number} (MT-SICS level {identity.sics_level}) "
        f"on {balance.port_name}; stable at {weight.mass_g:.5f} g",
    )  # fmt: skip


def check_buzzer(bench: Bench, settings: SelfTestConfig, sleep: Sleep) -> CheckResult:
    """One tone on the buzzer, read back from its pin."""
    buzzer = bench.buzzer
    try:
        buzzer.silence()
        buzzer.frequency = BUZZER_TEST_HZ
        buzzer.value = 0.5
        sounding = buzzer.value
        sleep(settings.signal_s)
        buzzer.value = 0
        silent = buzzer.value
    except Exception as error:  # a dead pin must fail the check, not the service
        pin = bench.config.pins.buzzer
        return CheckResult("buzzer", False, f"cannot drive BCM {pin} ({_describe(error)})")
    if sounding != 0.5 or silent != 0:
        return CheckResult(
            "buzzer", False, f"its pin reads {sounding:g} while sounding, {silent:g} after"
        )
    return CheckResult("buzzer", True, f"sounded {BUZZER_TEST_HZ:g} Hz for {settings.signal_s:g} s")


def check_led(bench: Bench, settings: SelfTestConfig, sleep: Sleep) -> CheckResult:
    """Red, green and blue once on the status LED, each read back from the pins."""
    led = bench.led
    wrong = []
    try:
        for colour in ("red", "green", "blue"):
            led.show(colour)
            if tuple(led.color) != led.COLOURS[colour]:
                wrong.append(f"{colour} reads {tuple(led.color)}")
            sleep(settings.signal_s)
        led.show("off")
    except Exception as error:  # a dead pin must fail the check, not the service
        return CheckResult("led", False, f"cannot drive the LED pins ({_describe(error)})")
    if wrong:
        return CheckResult("led", False, "; ".join(wrong))
    return CheckResult("led", True, f"red, green, blue for {settings.signal_s:g} s each")


def check_books(data_dir: Path, settings: SelfTestConfig) -> CheckResult:
    """The books' directory takes a synced write and its file system has room."""
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        return CheckResult("books", False, f"{data_dir} is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return CheckResult("books", False, f"cannot create {data_dir} ({_os_reason(error)})")
    probe = data_dir / f".selftest-{os.getpid()}"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, b"\0" * 4096)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        probe.unlink()
    except OSError as error:
        return CheckResult("books", False, f"{data_dir} is not writable ({_os_reason(error)})")
    database = data_dir / "rig.db"
    if database.exists() and not os.access(database, os.W_OK):
        return CheckResult("books", False, f"{database} is read-only")
    stats = os.statvfs(data_dir)
    free_mb = stats.f_bavail * stats.f_frsize / 1e6
    if free_mb < settings.min_free_mb:
        return CheckResult(
            "books", False,
            f"{free_mb:.1f} MB free on the file system of {data_dir}, below the "
            f"{settings.min_free_mb:g} MB the books need (selftest.min_free_mb)",
        )  # fmt: skip
    return CheckResult(
        "books", True,
        f"{data_dir} writable, {free_mb:.0f} MB free (at least {settings.min_free_mb:g} MB)",
    )  # fmt: skip


def run_selftest(
    bench: Bench,
    data_dir: Path | str,
    settings: SelfTestConfig | None = None,
    *,
    sleep: Sleep = time.sleep,
    after_each: Callable[[CheckResult], None] | None = None,
) -> SelfTestReport:
    """Run every check against *bench* and the books in *data_dir*.

    Call it before delivery starts (motor released, flow sensor idle). *sleep* waits between
    flow readings and while the buzzer and LED show (a virtual clock's advance in simulations);
    *after_each* hears each result as it comes (the service pings systemd's watchdog there).
    A check that meets an unexpected error fails with that error; the self-test never raises.
    """
    settings = settings or SelfTestConfig()
    steps: list[tuple[str, Callable[[], CheckResult]]] = [
        ("pins", lambda: check_pins(bench)),
        ("enable", lambda: check_enable(bench)),
        ("switches", lambda: check_switches(bench)),
        ("flow_sensor", lambda: check_flow_sensor(bench, settings, sleep)),
        ("balance", lambda: check_balance(bench, settings)),
        ("buzzer", lambda: check_buzzer(bench, settings, sleep)),
        ("led", lambda: check_led(bench, settings, sleep)),
        ("books", lambda: check_books(Path(data_dir), settings)),
    ]
    results = []
    for name, check in steps:
        try:
            result = check()
        except Exception as error:
            result = CheckResult(name, False, f"the check itself failed ({_describe(error)})")
        results.append(result)
        if after_each is not None:
            after_each(result)
    return SelfTestReport(tuple(results))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error)


# -- itbrig selftest -----------------------------------------------------------------------------


def format_report(report: SelfTestReport, kind: str) -> str:
    where = "the simulated bench" if kind == "sim" else "the Pi's bench"
    lines = [f"self-test on {where}: {'PASSED' if report.passed else 'FAILED'}"]
    width = max(len(check.name) for check in report.checks)
    for check in report.checks:
        mark = "ok  " if check.passed else "FAIL"
        lines.append(f"  {mark}  {check.name:<{width}}  {check.detail}")
    return "\n".join(lines)


def _unbuildable(error: Exception) -> SelfTestReport:
    detail = (
        f"cannot claim the bench's pins and instruments ({_describe(error)}); if the rig "
        "service is running it owns them: stop it first (sudo systemctl stop itbrig.service)"
    )
    return SelfTestReport((CheckResult("pins", False, detail),))


def selftest_command(args: argparse.Namespace) -> int:
    config: RigConfig = load_config(args.config)
    kind = args.hal or default_hal_kind()
    if kind == "gpio" and pi_model() is None:
        raise InputError("--hal gpio: this machine is not a Raspberry Pi; allowed here: --hal sim")
    try:
        bench = build_bench(config, kind)
    except Exception as error:  # HalUnavailable, a pin in use: the report names what failed
        report = _unbuildable(error)
    else:
        try:
            report = run_selftest(bench, Path(args.data_dir), config.selftest)
        finally:
            bench.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, kind))
    return EXIT_PASSED if report.passed else EXIT_FAILED


def add_selftest_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "selftest",
        help="power-on self-test of the bench; exit 0 passed, 1 a check failed, 2 bad input",
        description="Check pins, ENABLE, switches, flow sensor, balance, buzzer, LED and books "
        "(the same self-test the rig service runs at start). Exit 0 when every check passes, "
        "1 when one fails, 2 on bad input. Stop the rig service first on a Pi: it owns the pins.",
    )
    parser.add_argument("--json", action="store_true", help='print {"passed", "checks": [...]}')
    parser.add_argument(
        "--hal", choices=("sim", "gpio"), default=None,
        help="hardware layer (default: gpio on a Raspberry Pi, sim elsewhere)",
    )  # fmt: skip
    parser.add_argument("--config", help="rig.toml (default: the shipped one)")
    parser.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR),
        help="where the books live (default: data; /var/lib/itbrig under systemd)",
    )  # fmt: skip
    parser.set_defaults(handler=selftest_command)
