"""Every kiosk screen renders offscreen, fits the display and keeps its touch targets large;
keypad, banner and unreachable state work without a service."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kivy.uix.button import Button

from rig.client.launcher import free_port
from ui import format as fmt
from ui.controller import Controller
from ui.nav import SCREENS
from ui.widgets import DIM_FACTOR

MIN_TARGET_PX = 48

STATUS = {
    "training_notice": fmt.TRAINING_NOTICE,
    "state": "running",
    "time_compression": 1440.0,
    "patient_time": "2026-01-05T10:00:00Z",
    "therapy": {
        "settings": {
            "mode": "continuous",
            "drug": "baclofen",
            "concentration_ug_per_ml": 500.0,
            "daily_dose_ug_per_day": 300.0,
            "patient_bolus": None,
            "reservoir": {
                "volume_ml": 20.0,
                "hours_to_low": 720.0,
                "low_alarm_at": "2026-02-04T10:00:00Z",
                "hours_to_empty": 800.0,
                "empty_at": "2026-02-07T18:00:00Z",
            },
        },
        "reservoir": {"capacity_ml": 20.0, "volume_ml": 20.0, "low_threshold_ml": 2.0},
        "battery": {"state": "ok", "eri_at": "2032-01-04T08:00:00Z"},
    },
    "rates": {
        "dose_ug_per_day": 300.0,
        "rate_ul_per_h": 25.0,
        "rate_ml_per_day": 0.6,
        "bench_ul_per_min": 600.0,
        "bench_steps_per_s": 490.0,
    },
    "alarms": [],
    "silence_remaining_s": 0.0,
    "security": {"factory_pins": ["trainee", "clinician", "engineer"], "warning": "..."},
}


def alarm(priority: str, code: str = "occlusion", acknowledged: bool = False) -> dict:
    return {
        "id": 1,
        "code": code,
        "priority": priority,
        "title": code.replace("_", " ").capitalize(),
        "message": "test",
        "raised_at": "2026-01-05T10:00:00Z",
        "acknowledged": acknowledged,
    }


def visible_buttons(root):
    for widget in root.walk(restrict=True):
        if isinstance(widget, Button) and widget.opacity > 0 and widget.get_root_window():
            yield widget


@pytest.fixture
def kiosk(offline_kiosk, drive):
    """The kiosk showing a canned status (the overlay lifted)."""
    offline_kiosk.ctl._got_status(STATUS)
    drive.pump(3)
    return offline_kiosk


def test_every_screen_fits_with_large_targets_and_the_notice(kiosk, drive):
    """At the conftest's 800×480 (other sizes, each in its own process: test_kiosk_sizes)."""
    width, height = 800, 480
    kiosk.ctl.role = "clinician"  # the fullest navigation bar
    assert kiosk.ids.notice.text == fmt.TRAINING_NOTICE
    for name in (entry.name for entry in SCREENS):
        kiosk.show(name)
        drive.pump(3)
        assert kiosk.ids.notice.get_root_window() is not None
        assert kiosk.ids.notice.texture_size[0] > 100, "training notice not drawn"
        seen = 0
        for button in visible_buttons(kiosk):
            if button.parent is kiosk.ids.screens.current_screen or button.width == 0:
                continue
            seen += 1
            x, y = button.to_window(button.x, button.y)
            label = f"{name}: {button.text!r}"
            assert button.width >= MIN_TARGET_PX and button.height >= MIN_TARGET_PX, label
            assert x >= 0 and x + button.width <= width + 1, f"{label} off-screen"
            assert y >= 0 and y + button.height <= height + 1, f"{label} off-screen"
        assert seen >= 10, name
        drive.screenshot(f"{name}-{width}x{height}")


def test_home_shows_the_program_in_clinical_and_bench_units(kiosk, drive):
    home = kiosk.manager.get_screen("home")
    assert "Baclofen" in home.ids.program_line.text and "500 µg/mL" in home.ids.program_line.text
    assert home.ids.dose.text == "300.0 µg/day"
    assert "25.00 µL/h" in home.ids.rate_clinical.text
    assert "600.00 µL/min" in home.ids.rate_bench.text
    assert "×1440" in home.ids.compression.text and "×1440" in kiosk.header
    assert home.ids.gauge.fill == pytest.approx(1.0) and home.ids.gauge.low == pytest.approx(0.1)
    assert "30.0 days" in home.ids.to_low.text
    assert "04 Feb 2026" in home.ids.low_at.text
    assert home.ids.start_stop.text == "Stop"
    # The rig still has the factory PINs: Home says so.
    assert "Factory PIN in use: trainee, clinician, engineer" in home.ids.security.text


def test_trend_plot_draws_measured_and_expected(kiosk, drive):
    home = kiosk.manager.get_screen("home")
    for i in range(50):
        kiosk.ctl.dispatch(
            "on_sample",
            {"bench_s": i * 0.2, "expected_ul_per_min": 600.0, "measured_ul_per_min": 590.0 + i},
        )
    drive.pump(2)
    plot = home.ids.trend
    assert plot.samples_drawn == 50
    assert [len(run) for run in plot.segments[2]] == [100]
    assert plot.y_max >= 639 * 60
    drive.screenshot("home-trend")


def test_keypad_entry_by_touch(kiosk, drive):
    kiosk.show("program")
    drive.pump(2)
    screen = kiosk.manager.get_screen("program")
    form = screen.form
    keys = {b.key: b for b in form.keypad_box.children}
    dose_button = form._buttons["dose_ug_per_day"]
    drive.tap(dose_button)
    assert form.active == "dose_ug_per_day"
    assert form.values["dose_ug_per_day"] == 300.0  # preloaded from the running program
    drive.tap(form.ids.clear_key)
    assert form.values["dose_ug_per_day"] is None
    for key in ("0", "4", "2", ".", "5", "."):
        drive.tap(keys[key])
    assert form.refused  # a second point
    drive.tap(keys["7"])
    assert form.refused  # a second decimal on a field with one
    assert form.values["dose_ug_per_day"] == 42.5
    drive.tap(keys["back"])
    drive.tap(keys["back"])
    drive.tap(keys["1"])
    assert not form.refused
    assert form.values["dose_ug_per_day"] == 421
    assert form.display == "421 µg/day"
    assert dose_button.text == "Daily dose: 421 µg/day"
    drive.screenshot("program-keypad")


@pytest.mark.parametrize(
    ("priority", "rgba", "flash_hz"),
    [
        ("high", (0.86, 0, 0, 1), 2.1),
        ("medium", (1, 0.84, 0, 1), 0.6),
        ("low", (0, 0.8, 0.9, 1), 0),
    ],
)
def test_alarm_banner_colours_and_flash_rates(kiosk, drive, priority, rgba, flash_hz):
    status = {**STATUS, "alarms": [alarm("low", "eri"), alarm(priority)]}
    kiosk.ctl._got_status(status)
    drive.pump(2)
    banner = kiosk.ids.banner
    assert banner.priority == priority
    assert banner.flash_hz == pytest.approx(flash_hz)
    # A flashing banner may be caught in its dim half: the same colour, dimmed.
    k = 1.0 if banner.lit else DIM_FACTOR
    assert tuple(banner.bg_rgba) == pytest.approx((rgba[0] * k, rgba[1] * k, rgba[2] * k, 1))
    # The flasher toggles every half period; a steady (low) banner has none.
    flasher = banner._flasher
    if flash_hz:
        assert flasher.timeout == pytest.approx(0.5 / flash_hz)
        toggles, last = 0, banner.lit
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            drive.pump(1)
            if banner.lit != last:
                toggles, last = toggles + 1, banner.lit
        # Two seconds at f Hz is 4 f toggles (on and off); a loaded machine draws fewer frames,
        # and the clock never fires an interval twice in a frame: never more, and some.
        assert 1 <= toggles <= 4 * flash_hz + 1
    else:
        assert flasher is None and banner.lit
    drive.screenshot(f"banner-{priority}")
    drive.tap(banner)
    assert kiosk.manager.current == "alarms"
    drive.screenshot(f"alarms-{priority}")


def test_unreachable_state_shows_and_clears_by_itself(window, drive):
    port = free_port()
    ctl = Controller(f"http://127.0.0.1:{port}", poll_s=0.3)
    from ui.app import build_root

    root = build_root(ctl)
    window.add_widget(root)
    ctl.start()
    try:
        drive.wait_for(lambda: root.unreachable_shown, 5, "the connecting state")
        drive.wait_for(lambda: not ctl.reachable and ctl.last_error, 5, "a failed poll")
        drive.screenshot("unreachable")
        # the overlay swallows touches: the nav bar underneath does not react
        nav = next(b for b in root.ids.nav.children if b.text == "History")
        drive.tap(nav, reaches=False)
        assert root.manager.current == "home"

        server = ThreadingHTTPServer(("127.0.0.1", port), _StatusHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            drive.wait_for(lambda: not root.unreachable_shown, 10, "recovery")
            assert root.manager.get_screen("home").ids.dose.text == "300.0 µg/day"
            server.shutdown()
            server.server_close()
            drive.wait_for(lambda: root.unreachable_shown, 10, "the unreachable state")
            assert "UNREACHABLE" in root.ids.overlay.text
        finally:
            server.server_close()
    finally:
        window.remove_widget(root)
        ctl.stop()


class _StatusHandler(BaseHTTPRequestHandler):
    """Answers ``GET /api/status`` with the canned status."""

    def do_GET(self) -> None:
        body = json.dumps(STATUS).encode()
        self.send_response(200 if self.path.startswith("/api/status") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_home_shows_the_real_contents_the_dose_to_the_patient_and_the_effective_clock(kiosk, drive):
    status = {
        **STATUS,
        "clock": {"time_compression_nominal": 1440.0, "time_compression_effective": 480.0},
        "reservoir": {
            "concentration_ug_per_ml": 2000.0,
            "programmed_concentration_ug_per_ml": 500.0,
            "concentration_mismatch": True,
        },
        "delivered": {"patient_ug": 961.5},
    }
    kiosk.ctl._got_status(status)
    drive.pump(2)
    home = kiosk.manager.get_screen("home")
    assert home.ids.contents.text == "holds 2,000 µg/mL, not 500"
    assert tuple(home.ids.contents.color) == pytest.approx((1, 0.84, 0, 1))
    assert home.ids.patient_dose.text == "to patient 961.5 µg in all"
    assert "×1440" in home.ids.compression.text and "now ×480" in home.ids.compression.text
    drive.screenshot("home-wrong-concentration")
