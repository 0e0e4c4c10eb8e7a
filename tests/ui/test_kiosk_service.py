"""End to end: the kiosk against a real ``itbrig serve --hal sim`` on a loopback port, by touch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rig.client.http import RigClient
from rig.client.launcher import ServiceProcess
from ui import format as fmt
from ui.app import KioskRoot, build_root
from ui.controller import Controller
from ui.widgets import PIN_GLYPH

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def service(tmp_path) -> Iterator[ServiceProcess]:
    with ServiceProcess(data_dir=tmp_path / "rig", time_scale=1440) as running:
        yield running


@pytest.fixture
def live(service, window, drive) -> Iterator[KioskRoot]:
    ctl = Controller(service.url, poll_s=0.25)
    root = build_root(ctl)
    window.add_widget(root)
    ctl.start()
    drive.wait_for(lambda: ctl.reachable, 15, "the first status")
    yield root
    window.remove_widget(root)
    ctl.stop()
    drive.pump(1)


def log_in(root: KioskRoot, drive, role: str = "clinician", pin: str = "2222") -> None:
    root.show("login")
    drive.pump(2)
    login = root.manager.get_screen("login")
    drive.tap(login.ids[f"role_{role}"])
    keys = {b.key: b for b in login.ids.pinpad.keypad_box.children}
    for digit in pin:
        drive.tap(keys[digit])
    assert login.ids.pinpad.masked == PIN_GLYPH * len(pin)
    drive.tap(login.ids.log_in)
    drive.wait_for(lambda: root.ctl.role == role, 10, "login")


def enter(drive, form, key: str, text: str) -> None:
    """Tap field *key*, clear it and type *text* on the keypad."""
    drive.tap(form._buttons[key])
    drive.tap(form.ids.clear_key)
    keys = {b.key: b for b in form.keypad_box.children}
    for char in text:
        drive.tap(keys[char])
    assert form.values[key] == float(text)


def program_through_wizard(root: KioskRoot, drive, concentration: str, dose: str):
    root.show("program")
    drive.pump(2)
    screen = root.manager.get_screen("program")
    drive.tap(screen.ids.mode_continuous)
    enter(drive, screen.form, "concentration_ug_per_ml", concentration)
    enter(drive, screen.form, "dose_ug_per_day", dose)
    review = next(b for b in screen.form.actions_box.children if b.text == "Review")
    drive.tap(review)
    return screen


def remote_status(service: ServiceProcess) -> dict:
    with RigClient(service.url) as client:
        return client.get("/api/status")


def test_program_a_dose_through_the_wizard(live, service, drive):
    log_in(live, drive)
    program_through_wizard(live, drive, "500", "300")
    drive.wait_for(lambda: live.manager.current == "finish", 10, "the Finish screen")
    finish = live.manager.get_screen("finish")
    rows = {label: (old, new) for label, old, new in finish.rows}
    assert rows["Daily dose"] == ("0.0 µg/day", "300.0 µg/day")
    assert rows["Concentration"][1] == "500 µg/mL"
    assert ("Rate, µL/h", "0.00 µL/h", "25.00 µL/h") in finish.rows
    drive.screenshot("e2e-finish")
    assert fmt.view(remote_status(service))["program"] is None  # nothing changes before confirm
    drive.tap(finish.ids.confirm)
    drive.wait_for(lambda: live.manager.current == "home", 10, "confirmation")
    settings = remote_status(service)["therapy"]["settings"]
    assert settings["mode"] == "continuous"
    assert settings["concentration_ug_per_ml"] == 500
    assert settings["daily_dose_ug_per_day"] == 300
    home = live.manager.get_screen("home")
    drive.wait_for(lambda: home.ids.dose.text == "300.0 µg/day", 5, "home to show the dose")
    drive.wait_for(lambda: home.state == "running", 10, "delivery to start on confirmation")
    assert home.ids.start_stop.text == "Stop"
    drive.wait_for(lambda: home.ids.trend.samples_drawn >= 10, 10, "the live trend")
    assert "25.00 µL/h" in home.ids.rate_clinical.text
    drive.screenshot("e2e-home-running")


def test_a_hard_limit_dose_is_refused_on_screen(live, service, drive):
    log_in(live, drive)
    screen = program_through_wizard(live, drive, "2000", "2500")
    drive.wait_for(lambda: "2000" in screen.message and not screen.busy, 10, "the refusal")
    assert live.manager.current == "program"
    assert "hard limit" in screen.message.lower() or "limit" in screen.message.lower()
    assert screen.form.message == screen.message
    drive.screenshot("e2e-hard-limit")
    assert fmt.view(remote_status(service))["program"] is None


def test_an_injected_occlusion_raises_the_alarm_banner(live, service, drive):
    log_in(live, drive)
    program_through_wizard(live, drive, "500", "300")
    drive.wait_for(lambda: live.manager.current == "finish", 10, "the Finish screen")
    drive.tap(live.manager.get_screen("finish").ids.confirm)
    drive.wait_for(lambda: live.manager.current == "home", 10, "confirmation")
    home = live.manager.get_screen("home")
    drive.wait_for(lambda: home.state == "running", 10, "delivery to start")
    live.show("faults")
    drive.pump(4)
    faults = live.manager.get_screen("faults")
    slider = faults.ids.occlusion_fraction
    drive.touch_at(*slider.to_window(slider.right - 2, slider.center_y))
    assert slider.value == pytest.approx(1.0)
    drive.tap(faults.ids.apply_faults)
    drive.wait_for(lambda: faults.message == "Faults applied", 10, "the fault")
    banner = live.ids.banner
    drive.wait_for(lambda: banner.priority != "", 60, "an alarm")
    codes = {a["code"] for a in live.ctl.status["alarms"]}
    assert codes & {"occlusion", "no_flow", "under_infusion", "motor_stall"}, codes
    assert banner.priority in ("high", "medium")
    assert banner.flash_hz > 0
    drive.screenshot("e2e-occlusion-banner")
    drive.tap(banner)
    assert live.manager.current == "alarms"
    drive.pump(3)
    drive.screenshot("e2e-occlusion-alarms")


def test_a_refill_with_a_3_ml_discrepancy_shows_the_warning(live, service, drive):
    log_in(live, drive)
    program_through_wizard(live, drive, "500", "300")
    drive.wait_for(lambda: live.manager.current == "finish", 10, "the Finish screen")
    drive.tap(live.manager.get_screen("finish").ids.confirm)
    drive.wait_for(lambda: live.manager.current == "home", 10, "confirmation")
    live.show("refill")
    drive.pump(2)
    refill = live.manager.get_screen("refill")
    drive.wait_for(lambda: refill.state == "running", 10, "delivery")
    assert refill.ids.to_withdrawn.disabled
    drive.tap(refill.ids.stop_pump)
    drive.wait_for(lambda: refill.state == "stopped", 10, "the pump to stop")
    drive.tap(refill.ids.to_withdrawn)
    assert refill.step == "withdrawn"
    expected = fmt.view(remote_status(service))["reservoir"]["volume_ml"]
    enter(drive, refill.form, "withdrawn_ml", f"{expected - 3:.2f}".rstrip("0").rstrip("."))
    next_button = next(b for b in refill.form.actions_box.children if b.text == "Next")
    drive.tap(next_button)
    drive.wait_for(lambda: refill.step == "verdict", 10, "the verdict")
    assert refill.verdict["significant"] is True
    assert refill.ids.verdict_title.text.startswith("SIGNIFICANT DISCREPANCY")
    assert "3.00 mL" in refill.ids.verdict_title.text
    assert refill.ids.explanation.text
    assert f"Expected {expected:.2f} mL" in refill.ids.amounts.text
    drive.screenshot("e2e-refill-verdict")
    drive.tap(refill.ids.to_fill)
    enter(drive, refill.form, "volume_ml", "20")
    enter(drive, refill.form, "concentration_ug_per_ml", "1000")
    drive.tap(next_button)
    drive.wait_for(lambda: refill.step == "done", 10, "the fill")
    assert refill.bridge_offered
    assert "Low-reservoir alarm" in refill.result_text
    drive.screenshot("e2e-refill-done")
    drive.tap(refill.ids.refill_finish)
    drive.wait_for(lambda: refill.bridge_pending, 10, "the pending bridge")
    drive.tap(refill.ids.bridge)
    program = live.manager.get_screen("program")
    assert live.manager.current == "program" and program.lead_in == "bridge"
    assert program.form.values["old_concentration_ug_per_ml"] == 500
    assert program.form.values["concentration_ug_per_ml"] == 1000
    drive.screenshot("e2e-bridge-bolus")


@pytest.fixture
def turned_service(tmp_path) -> Iterator[ServiceProcess]:
    config = tmp_path / "rig.toml"
    config.write_text("[kiosk]\nrotation = 90\n")
    extra = ["--config", str(config)]
    with ServiceProcess(data_dir=tmp_path / "rig", time_scale=1440, extra_args=extra) as running:
        yield running


def test_the_kiosk_turns_as_rig_toml_says(turned_service, window, drive):
    """``[kiosk] rotation = 90`` in the service's rig.toml turns the kiosk's picture and touch."""
    from ui.cli import initial_rotation

    assert initial_rotation(turned_service.url) == 90
    assert initial_rotation("http://127.0.0.1:9", timeout_s=0.5) == 0  # nobody there yet
    ctl = Controller(turned_service.url, poll_s=0.25)
    root = build_root(ctl)
    window.add_widget(root)
    ctl.start()
    try:
        drive.wait_for(lambda: window.rotation == 90, 15, "the kiosk to turn")
        drive.pump(3)
        assert window.size == (480, 800)  # Kivy lays the kiosk out on the turned screen
        assert root.size == [480, 800]
    finally:
        window.remove_widget(root)
        ctl.stop()
        window.rotation = 0
        drive.pump(2)
    assert window.size == (800, 480)
