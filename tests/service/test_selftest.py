"""Power-on self-test: every check passes on a healthy simulated bench and each fails, naming
its part, when that part of the simulated bench is broken."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hal.bench import build_bench
from hal.sim.flow_sensor import SensorFaults
from rig.service.config import SelfTestConfig, load_config
from rig.service.selftest import (
    PARTS,
    CheckResult,
    SelfTestReport,
    check_balance,
    check_books,
    run_selftest,
)
from tests.manual_clock import ManualClock

PROJECT_DIR = Path(__file__).resolve().parents[2]
FAST = SelfTestConfig(signal_s=0.01, zero_flow_samples=3)


@pytest.fixture
def rig(tmp_path):
    """A simulated bench on a virtual clock, its data directory, and a self-test runner."""
    clock = ManualClock(100.0)
    config = load_config()
    bench = build_bench(config, "sim", clock=clock, start_stepper=False)

    def selftest(settings: SelfTestConfig = FAST, data_dir: Path | None = None):
        return run_selftest(bench, data_dir or tmp_path / "data", settings, sleep=clock.advance)

    yield bench, selftest
    bench.close()


def by_name(report: SelfTestReport) -> dict[str, CheckResult]:
    return {check.name: check for check in report.checks}


def failed_names(report: SelfTestReport) -> list[str]:
    return [check.name for check in report.failures]


def test_every_check_passes_on_a_healthy_simulated_bench(rig):
    bench, selftest = rig
    report = selftest()
    assert report.passed, report.failure_message()
    assert [check.name for check in report.checks] == list(PARTS)
    checks = by_name(report)
    assert "15 pins claimed" in checks["pins"].detail
    assert "SLF3S-0600F product 0x07030301" in checks["flow_sensor"].detail
    assert "SIM-XS205" in checks["balance"].detail and "stable at" in checks["balance"].detail
    assert "emergency stop released" in checks["switches"].detail
    as_json = report.to_dict()
    assert as_json["passed"] is True
    assert set(as_json["checks"][0]) == {"name", "passed", "detail"}
    # The self-test leaves the bench as delivery expects it: motor released, sensor idle, LED off.
    assert not bench.drive.is_enabled
    assert not bench.flow_sensor.is_measuring
    assert tuple(bench.led.color) == (0, 0, 0)
    assert bench.buzzer.value == 0


def test_buzzer_and_led_really_cycle_on_their_pins(rig):
    bench, selftest = rig
    buzzer_pin = bench.pin_factory.pin(bench.config.pins.buzzer)
    led_pins = [bench.pin_factory.pin(n) for n in (16, 20, 21)]
    seen: dict[str, set] = {"buzzer": set(), "led": set()}
    buzzer_pin.add_listener(lambda state: seen["buzzer"].add(state))
    for pin in led_pins:
        pin.add_listener(lambda state, name=pin.info.name: seen["led"].add((name, state)))
    assert selftest().passed
    assert seen["buzzer"] == {0.5, 0}
    assert {("GPIO16", 1), ("GPIO20", 1), ("GPIO21", 1)} <= seen["led"]


def test_sensor_dropout_fails_the_flow_sensor_check_only(rig):
    bench, selftest = rig
    bench.sim.flow_sensor.set_faults(SensorFaults(dropout=True))
    report = selftest()
    assert failed_names(report) == ["flow_sensor"]
    detail = by_name(report)["flow_sensor"].detail
    assert "not acknowledged (NACK)" in detail
    assert report.failure_message().startswith("self-test failed: flow sensor: ")


def test_flow_through_a_stopped_pump_fails_the_zero_flow_check(rig):
    bench, selftest = rig
    bench.sim.flow_sensor.set_faults(SensorFaults(bias_ul_per_min=20.0))
    report = selftest()
    assert failed_names(report) == ["flow_sensor"]
    detail = by_name(report)["flow_sensor"].detail
    assert "tolerance ±5" in detail and "flow through a stopped pump" in detail
    assert selftest(FAST.model_copy(update={"zero_flow_tolerance_ul_per_min": 25.0})).passed


def test_another_sensor_model_fails_on_its_product_id(rig):
    bench, selftest = rig
    bench.sim.flow_sensor.product_id = 0x07030201  # another SLF3x, another flow scale
    report = selftest()
    assert failed_names(report) == ["flow_sensor"]
    assert "product id 0x07030201 is not an SLF3S-0600F" in by_name(report)["flow_sensor"].detail


def test_an_unplugged_balance_fails_the_balance_check(rig):
    bench, selftest = rig
    bench.sim.balance.close()  # the adapter's port goes away
    report = selftest()
    assert failed_names(report) == ["balance"]
    assert "balance port" in by_name(report)["balance"].detail


def test_a_silent_balance_fails_on_its_timeout(rig):
    bench, selftest = rig
    bench.sim.balance.fault = "silent"
    report = selftest()
    assert failed_names(report) == ["balance"]
    detail = by_name(report)["balance"].detail
    assert "command 'I1'" in detail and "no complete reply" in detail


def test_a_balance_that_could_not_be_opened_is_named_and_a_missing_one_is_skipped(rig):
    bench, _selftest = rig
    absent = dataclasses.replace(
        bench, balance=None, balance_error="balance port /dev/itbrig-balance: cannot open"
    )
    result = check_balance(absent, FAST)
    assert not result.passed and "/dev/itbrig-balance: cannot open" in result.detail
    config = bench.config.model_copy(
        update={"balance": bench.config.balance.model_copy(update={"enabled": False})}
    )
    skipped = check_balance(dataclasses.replace(bench, balance=None, config=config), FAST)
    assert skipped.passed and "not fitted" in skipped.detail


def test_both_limit_switches_closed_is_implausible(rig):
    bench, selftest = rig
    for number in (bench.config.pins.limit_full, bench.config.pins.limit_empty):
        bench.pin_factory.pin(number).drive_low()  # a shorted cable closes both inputs
    report = selftest()
    assert failed_names(report) == ["switches"]
    detail = by_name(report)["switches"].detail
    assert "both limit switches read closed (BCM 5 and 6)" in detail


def test_a_pressed_emergency_stop_fails_the_switch_check(rig):
    bench, selftest = rig
    bench.sim.bench.press_estop()
    report = selftest()
    assert failed_names(report) == ["switches"]
    assert "emergency stop (BCM 13) is pressed" in by_name(report)["switches"].detail
    bench.sim.bench.press_estop(False)
    assert selftest().passed


def test_an_empty_syringe_passes_with_a_note(rig):
    bench, selftest = rig
    bench.pin_factory.pin(bench.config.pins.limit_full).drive_high()
    bench.pin_factory.pin(bench.config.pins.limit_empty).drive_low()
    report = selftest()
    assert report.passed
    assert "refill it" in by_name(report)["switches"].detail


def test_an_energised_motor_fails_the_enable_check(rig):
    bench, selftest = rig
    bench.drive.energise()
    report = selftest()
    assert failed_names(report) == ["enable"]
    assert "ENABLE (BCM 24) is active" in by_name(report)["enable"].detail


def test_a_pin_no_device_holds_fails_the_pin_check_and_its_part(rig):
    bench, selftest = rig
    bench.buzzer.close()
    report = selftest()
    assert failed_names(report) == ["pins", "buzzer"]
    assert "buzzer (BCM 12) is not claimed" in by_name(report)["pins"].detail
    assert "cannot drive BCM 12" in by_name(report)["buzzer"].detail
    message = report.failure_message()
    assert "GPIO pins: buzzer (BCM 12)" in message and "; buzzer: cannot drive" in message


def test_a_dead_led_fails_the_led_check(rig):
    bench, selftest = rig
    bench.led.close()
    report = selftest()
    assert failed_names(report) == ["pins", "led"]
    assert "led_red (BCM 16) is not claimed" in by_name(report)["pins"].detail


def test_books_on_a_full_file_system_fail(rig, tmp_path):
    _bench, selftest = rig
    report = selftest(FAST.model_copy(update={"min_free_mb": 1e12}))
    assert failed_names(report) == ["books"]
    assert (
        "below the 1e+12 MB the books need (selftest.min_free_mb)"
        in by_name(report)["books"].detail
    )


def test_books_that_are_not_a_directory_fail(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("a file where the books should be")
    result = check_books(not_a_dir, FAST)
    assert not result.passed and "is not a directory" in result.detail
    result = check_books(not_a_dir / "below", FAST)
    assert not result.passed and "cannot create" in result.detail


def test_read_only_books_fail():
    """A read-only data directory (as another user, since root may write anywhere)."""
    read_only = Path(tempfile.mkdtemp(prefix="itbrig-ro-"))
    try:
        read_only.chmod(0o555)
        if os.geteuid() != 0:
            result = check_books(read_only, FAST).to_dict()
        else:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop privileges")
            code = (
                "import json, sys; from rig.service.config import SelfTestConfig; "
                "from rig.service.selftest import check_books; "
                "print(json.dumps(check_books(sys.argv[1], SelfTestConfig()).to_dict()))"
            )
            nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"]
            completed = subprocess.run(
                [setpriv, *nobody, sys.executable, "-c", code, str(read_only)],
                capture_output=True, text=True, cwd="/", timeout=60, check=True,
            )  # fmt: skip
            result = json.loads(completed.stdout)
        assert result["passed"] is False
        assert f"{read_only} is not writable (Permission denied)" == result["detail"]
    finally:
        read_only.chmod(0o755)
        shutil.rmtree(read_only)


def test_a_check_that_raises_fails_with_the_error_instead_of_stopping_the_self_test(rig):
    bench, selftest = rig

    def broken_identify():
        raise RuntimeError("firmware crashed")

    bench.flow_sensor.identify = broken_identify
    report = selftest()
    assert failed_names(report) == ["flow_sensor"]
    assert "RuntimeError: firmware crashed" in by_name(report)["flow_sensor"].detail
    assert len(report.checks) == len(PARTS)


# -- itbrig selftest ------------------------------------------------------------------------------


def itbrig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rig.cli", *args],
        capture_output=True, text=True, cwd=PROJECT_DIR, timeout=120,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_itbrig_selftest_json_passes_on_the_simulated_bench(tmp_path):
    result = itbrig("selftest", "--hal", "sim", "--json", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"passed", "checks"}
    assert report["passed"] is True
    assert [check["name"] for check in report["checks"]] == list(PARTS)
    assert all(set(check) == {"name", "passed", "detail"} for check in report["checks"])


@pytest.mark.timeout(120)
def test_itbrig_selftest_fails_with_exit_1_naming_the_part(tmp_path):
    config = tmp_path / "rig.toml"
    config.write_text("[selftest]\nmin_free_mb = 1e12\nsignal_s = 0.01\n")
    args = ("selftest", "--hal", "sim", "--config", str(config), "--data-dir", str(tmp_path))
    result = itbrig(*args, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["books"]
    text = itbrig(*args)
    assert text.returncode == 1
    assert "self-test on the simulated bench: FAILED" in text.stdout
    assert "FAIL  books" in text.stdout and "ok    pins" in text.stdout


def test_itbrig_selftest_bad_input_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[selftest]\nmin_free_mb = -1\nsignal = 1\n")
    result = itbrig("selftest", "--hal", "sim", "--config", str(bad))
    assert result.returncode == 2
    assert "selftest.min_free_mb" in result.stderr and "selftest.signal" in result.stderr
    result = itbrig("selftest", "--hal", "dma")
    assert result.returncode == 2 and "invalid choice: 'dma'" in result.stderr


def test_itbrig_selftest_gpio_off_a_pi_is_bad_input():
    from hal.pins import pi_model

    if pi_model() is not None:
        pytest.skip("this machine is a Raspberry Pi")
    result = itbrig("selftest", "--hal", "gpio")
    assert result.returncode == 2
    assert "--hal gpio: this machine is not a Raspberry Pi; allowed here: --hal sim" in (
        result.stderr
    )


def test_missing_instruments_on_the_pi_path_start_the_bench_and_fail_their_checks(
    monkeypatch, tmp_path
):
    """On the gpio path an unplugged sensor or balance must not stop the bench from building:
    the self-test names them instead (pins here are gpiozero's mock pins under the gpio path)."""
    import hal.bench
    from hal.flow_sensor import AbsentFlowSensor, FlowSensorAbsent
    from hal.pins import make_sim_factory

    def no_sensor(config):
        raise FlowSensorAbsent("SLF3S-0600F at 0x08 on /dev/i2c-1: no device answered")

    monkeypatch.setattr(hal.bench, "make_pin_factory", lambda kind: make_sim_factory())
    monkeypatch.setattr(hal.bench, "open_flow_sensor", no_sensor)
    config = load_config()
    config = config.model_copy(
        update={"balance": config.balance.model_copy(update={"port": str(tmp_path / "none")})}
    )
    bench = build_bench(config, "gpio", start_stepper=False)
    try:
        assert isinstance(bench.flow_sensor, AbsentFlowSensor)
        assert bench.balance is None and "cannot open" in bench.balance_error
        report = run_selftest(bench, tmp_path / "data", FAST, sleep=lambda _s: None)
    finally:
        bench.close()
        bench.pin_factory.reset()
    assert failed_names(report) == ["flow_sensor", "balance"]
    assert "/dev/i2c-1: no device answered" in by_name(report)["flow_sensor"].detail
    assert str(tmp_path / "none") in by_name(report)["balance"].detail
