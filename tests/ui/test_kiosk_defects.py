"""The defects found walking the kiosk (issue 14) and its PIN and token gaps (issue 15), each
against what a person sees: offscreen widgets, real touches, and where the service's answer
matters the real API in-process over a virtual-clock rig (tests/ui/live_rig.py)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest
from kivy.core.text import Label as CoreLabel

from rig.client.http import ServiceUnreachable
from rig.service.api import FaultRequest
from tests.kiosk_touch import pump, wait_for
from tests.service.conftest import program_json
from tests.ui.conftest import mount
from tests.ui.live_rig import LiveRig, live_rig
from tests.ui.test_kiosk_screens import STATUS, alarm
from ui import format as fmt
from ui.app import KioskRoot
from ui.controller import Controller
from ui.nav import nav_for
from ui.widgets import DIM_FACTOR, PIN_GLYPH, PriorityChip, TrendPlot
from ui.worker import TelemetryStream

TOKEN = "a-long-enough-access-token-0123"


@pytest.fixture(scope="module")
def offline(window) -> Iterator[KioskRoot]:
    """One kiosk for the module, pointed where nothing listens (built once: it takes a second)."""
    ctl = Controller("http://127.0.0.1:9", poll_s=0.5)
    root = mount(ctl, window)
    yield root
    window.remove_widget(root)
    ctl.stop()
    pump(1)


def on_top(root: KioskRoot, window) -> None:
    """The module's two kiosks share the window: the one a test uses takes the touches."""
    window.remove_widget(root)
    window.add_widget(root)


@pytest.fixture
def kiosk(offline, window) -> KioskRoot:
    on_top(offline, window)
    offline.ctl.role = ""
    offline.ctl._got_status(STATUS)
    offline.show("home")
    pump(3)
    return offline


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[LiveRig]:
    with live_rig(tmp_path_factory.mktemp("rig")) as running:
        running.rig.confirm(program_json("continuous"))
        yield running


@pytest.fixture(scope="module")
def live_root(rig, window) -> Iterator[KioskRoot]:
    ctl = Controller(rig.url, poll_s=0.2)
    root = mount(ctl, window)
    ctl.start()
    wait_for(lambda: ctl.reachable, 10, "the first status")
    yield root
    window.remove_widget(root)
    ctl.stop()
    pump(1)


@pytest.fixture
def live(live_root, window) -> KioskRoot:
    on_top(live_root, window)
    live_root.ctl.logout()
    live_root.show("home")
    pump(2)
    return live_root


def type_pin(drive, pad, pin: str) -> None:
    keys = {b.key: b for b in pad.keypad_box.children}
    for digit in pin:
        drive.tap(keys[digit])


def log_in(root: KioskRoot, drive, role: str, pin: str) -> None:
    root.show("login")
    drive.pump(2)
    login = root.manager.get_screen("login")
    drive.tap(login.ids[f"role_{role}"])
    type_pin(drive, login.ids.pinpad, pin)
    drive.tap(login.ids.log_in)


# -- History ---------------------------------------------------------------------------------


def test_history_shows_the_event_log(live, drive):
    live.show("history")
    history = live.manager.get_screen("history")
    drive.wait_for(lambda: "program" in history.ids.events.text, 10, "the event log")
    assert history.ids.message.text == ""


def test_history_says_when_the_log_cannot_be_read(kiosk, drive):
    kiosk.show("history")  # nothing listens at the offline kiosk's URL
    history = kiosk.manager.get_screen("history")
    drive.wait_for(lambda: history.ids.message.text, 10, "an error")
    assert "does not answer" in history.ids.message.text


# -- Alarms ----------------------------------------------------------------------------------


def test_the_banner_and_the_chips_keep_their_iec_colours(kiosk, drive):
    for priority in ("high", "medium", "low"):
        kiosk.show("home")
        kiosk.ctl._got_status({**STATUS, "alarms": [alarm(priority)]})
        drive.pump(2)
        banner = kiosk.ids.banner
        style = fmt.banner_style(priority)
        drive.tap(banner, frames=1)  # a press used to turn it navy
        lit_or_dimmed = [style.rgba, (*(c * DIM_FACTOR for c in style.rgba[:3]), 1)]
        assert any(tuple(banner.bg_rgba) == pytest.approx(c) for c in lit_or_dimmed), priority
        assert tuple(banner.color) == pytest.approx(style.text_rgba)
        screen = kiosk.manager.get_screen("alarms")
        chips = [w for w in screen.walk() if isinstance(w, PriorityChip)]
        assert [c.text for c in chips] == [priority.upper()]
        assert tuple(chips[0].bg_rgba) == pytest.approx(style.rgba)
        assert tuple(chips[0].color) == pytest.approx(style.text_rgba)
        drive.screenshot(f"alarms-chip-{priority}")


# -- Words and units -------------------------------------------------------------------------


def test_a_wrong_pin_and_a_role_not_allowed_read_differently(live, drive):
    log_in(live, drive, "clinician", "9999")
    login = live.manager.get_screen("login")
    drive.wait_for(lambda: login.message, 10, "the refusal")
    assert login.message.startswith("Wrong PIN")
    log_in(live, drive, "trainee", "1111")
    drive.wait_for(lambda: live.ctl.role == "trainee", 10, "login")
    home = live.manager.get_screen("home")
    live.show("home")
    drive.wait_for(lambda: home.state == "running", 10, "delivery")
    drive.tap(home.ids.start_stop)
    drive.tap(home.confirm_popup.ids.yes)  # a trainee may not stop delivery
    drive.wait_for(lambda: home.message, 10, "the refusal")
    assert home.message.startswith("Not allowed for this role")


def test_the_pin_mask_is_drawn_by_the_kiosk_font():
    def pixels(text: str) -> bytes:
        label = CoreLabel(text=text, font_size=28)
        label.refresh()
        return label.texture.pixels

    missing = pixels("\ue000")  # a private-use code point: no font has it
    assert pixels(PIN_GLYPH) != missing


def test_home_shows_every_line_of_its_message(kiosk, drive):
    home = kiosk.manager.get_screen("home")
    home.say("first line\nsecond line")
    drive.pump(3)
    label = home.ids.message
    assert label.texture_size[1] <= label.height + 1
    assert label.texture_size[1] > 30  # two lines


def test_settings_error_wraps_inside_the_screen(kiosk, drive):
    kiosk.show("settings")
    settings = kiosk.manager.get_screen("settings")
    settings.fail("time_compression: " + "a very long reason " * 12)
    drive.pump(3)
    label = settings.ids.message
    assert label.texture_size[0] <= label.width + 1
    assert label.right <= kiosk.width and label.texture_size[1] <= label.height + 1


def test_stop_and_a_compression_change_are_asked_first(kiosk, drive, monkeypatch):
    home = kiosk.manager.get_screen("home")
    asked: list[tuple] = []
    monkeypatch.setattr(home, "request", lambda *args: asked.append(args))
    drive.tap(home.ids.start_stop)
    popup = home.confirm_popup
    assert "Stop delivery?" in popup.ids.question.text and asked == []
    drive.tap(popup.ids.yes)
    assert asked and asked[0][:2] == ("POST", "/api/stop")
    kiosk.show("settings")
    drive.pump(2)
    settings = kiosk.manager.get_screen("settings")
    assert settings.ids.compression_1440.selected and not settings.ids.compression_360.selected
    monkeypatch.setattr(settings, "request", lambda *args: asked.append(args))
    drive.tap(settings.ids.compression_360)
    assert "×360" in settings.confirm_popup.ids.question.text and len(asked) == 1
    drive.tap(settings.confirm_popup.ids.no)
    assert len(asked) == 1
    drive.tap(settings.ids.compression_360)
    drive.tap(settings.confirm_popup.ids.yes)
    assert asked[-1][:3] == ("PUT", "/api/settings", {"time_compression": 360})


# -- Navigation by role ----------------------------------------------------------------------


CLINICIAN_NAV = ["Home", "Program", "Bolus", "Refill", "Alarms", "History", "Faults", "Training"]
TRAINER_ONLY = ("Faults", "Training")
NAV_BY_ROLE = {
    "": ["Home", "Alarms", "History", "Login"],
    "trainee": ["Home", "Bolus", "Alarms", "History", "PIN", "Login"],
    "clinician": [*CLINICIAN_NAV, "Settings", "PIN", "Login"],
    "engineer": [n for n in CLINICIAN_NAV if n not in TRAINER_ONLY]
    + ["Settings", "Calib.", "PIN", "Login"],
}


def test_each_role_sees_its_own_navigation(kiosk, drive):
    home = kiosk.manager.get_screen("home")
    for role, shown in NAV_BY_ROLE.items():
        kiosk.ctl.role = "clinician"
        kiosk.show("faults")
        kiosk.ctl.role = role
        drive.pump(2)
        assert [b.text for b in reversed(kiosk.ids.nav.children)] == shown
        assert [e.label for e in nav_for(role)] == shown
        assert (kiosk.manager.current == "faults") == ("Faults" in shown)
        assert (home.ids.rate_bench.opacity > 0) == (role == "engineer")  # bench units


def test_logging_out_keeps_the_role_chosen_on_the_login_screen(kiosk, drive):
    login = kiosk.manager.get_screen("login")
    login.role = "engineer"
    kiosk.ctl.role = "clinician"
    kiosk.ctl.role = ""
    drive.pump(1)
    assert login.role == "engineer" and login.ids.role_engineer.state == "down"


def test_the_unreachable_notice_survives_garbage_collection_while_hidden(kiosk, drive):
    assert not kiosk.unreachable_shown  # the service answered: the notice is off the tree
    gc.collect()
    kiosk.ctl._status_failed(ServiceUnreachable("gone"))
    drive.pump(1)
    assert kiosk.unreachable_shown
    kiosk.ctl._got_status(STATUS)


# -- Trend -----------------------------------------------------------------------------------


def test_the_trend_leaves_gaps_shows_both_lines_the_sensor_and_its_axes(window, drive):
    plot = TrendPlot(size=(400, 200), pos=(0, 0))
    for i in range(20):
        missing = 8 <= i < 12  # the monitor's window restarting after a rate change
        expected = None if missing else 600.0
        plot.add_sample(i * 0.2, expected, expected, 590.0 + i % 3, 1440.0)
    expected_runs, sensor_runs, measured_runs = (plot.segments[k] for k in (1, 3, 2))
    assert expected_runs == measured_runs  # equal values: the wide band shows under the line
    assert [len(r) // 2 for r in measured_runs] == [8, 8]  # a gap, not a drop to zero
    assert all(p > 50 for run in measured_runs for p in run[1::2])  # 25 µL/h, not 0
    assert [len(r) // 2 for r in sensor_runs] == [20]
    widths = {k: w for k, _rgba, w in TrendPlot.SERIES}
    assert widths[1] > widths[2] and [k for k, *_ in TrendPlot.SERIES][-1] == 2  # band under
    assert plot.y_max == 50  # 600 bench µL/min at ×1440 = 25 patient µL/h (axis to 50)
    assert [label.text for label in plot._y_labels] == ["0", "25 µL/h", "50 µL/h"]
    assert plot._x_labels[0].text == "−24 h 00 min" and plot.compression_text.startswith(
        "time ×1440"
    )


# -- PIN change, factory PIN warning, access token --------------------------------------------


def test_a_role_changes_its_own_pin_on_the_kiosk(live, drive):
    home = live.manager.get_screen("home")
    drive.wait_for(lambda: "engineer" in home.ids.security.text, 10, "the factory PIN warning")
    log_in(live, drive, "engineer", "3333")
    drive.wait_for(lambda: live.ctl.role == "engineer", 10, "login")
    live.show("pin")
    drive.pump(2)
    screen = live.manager.get_screen("pin")
    pad = screen.ids.pinpad
    for pin in ("3333", "4826", "4826"):
        type_pin(drive, pad, pin)
        assert pad.masked == PIN_GLYPH * 4
        drive.tap(screen.ids.next)
    drive.wait_for(lambda: "changed" in screen.message, 10, "the change")
    drive.wait_for(lambda: "engineer" not in home.ids.security.text, 10, "the warning to drop")
    live.ctl.logout()
    log_in(live, drive, "engineer", "4826")
    drive.wait_for(lambda: live.ctl.role == "engineer", 10, "login with the new PIN")


def test_the_telemetry_stream_sends_the_access_token(tmp_path, drive):
    links: list[bool] = []

    def linked(state: bool) -> None:
        links.append(state)

    with live_rig(tmp_path, access_token=TOKEN) as rig:
        refused = TelemetryStream(rig.url, lambda _s: None, linked, post=lambda f: f())
        refused.start()
        drive.wait_for(lambda: links, 5, "a refused handshake")
        refused.stop()
        assert links[0] is False
        links.clear()
        os.environ["ITBRIG_TOKEN"] = TOKEN
        try:
            ctl = Controller(rig.url, post=lambda f: f())
        finally:
            del os.environ["ITBRIG_TOKEN"]
        ctl.telemetry._on_link = linked
        ctl.telemetry.start()
        drive.wait_for(lambda: True in links, 5, "the stream with the token")
        ctl.stop()


# -- last: it leaves the live rig's line kinked ---------------------------------------------


def test_a_kinked_line_stays_on_the_alarms_screen_after_acknowledging(live, rig, drive):
    rig.rig.run(9.0)
    rig.rig.service.inject_faults(FaultRequest.model_validate({"occlusion_fraction": 1.0}))
    rig.rig.run(15.0)
    log_in(live, drive, "clinician", "2222")
    drive.wait_for(lambda: live.ctl.role == "clinician", 10, "login")
    live.show("alarms")
    screen = live.manager.get_screen("alarms")
    drive.wait_for(lambda: any(a["code"] == "no_flow" for a in screen.alarms), 10, "no flow")
    drive.tap(screen.ids.ack_all)
    drive.wait_for(lambda: all(a["acknowledged"] for a in screen.alarms), 10, "acknowledged")
    rig.rig.run(3.0)
    drive.pump(8)
    texts = [w.text for w in screen.ids.alarm_list.walk() if hasattr(w, "text")]
    assert not any("No active alarms" in t for t in texts)
    row = next(t for t in texts if "No flow" in t)
    assert "condition still present" in row and "µL/h" in row and "µL/min" not in row
    drive.screenshot("alarms-no-flow-held")
