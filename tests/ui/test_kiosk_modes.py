"""A clinician programs every mode and a patient bolus by touch, and walks a refill at a new
concentration to its bridge bolus and back to the flex program, against a real
``itbrig serve --hal sim`` on a loopback port; each check reads what the service confirms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rig.client.http import RigClient
from rig.client.launcher import ServiceProcess
from tests.kiosk_touch import reveal
from tests.ui.test_kiosk_service import log_in
from ui.app import KioskRoot, build_root
from ui.controller import Controller

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[ServiceProcess]:
    data_dir = tmp_path_factory.mktemp("modes") / "rig"
    with ServiceProcess(data_dir=data_dir, time_scale=1440) as running:
        yield running


@pytest.fixture
def live(service, window, drive) -> Iterator[KioskRoot]:
    ctl = Controller(service.url, poll_s=1.0)  # each status redraws labels: CPU
    root = build_root(ctl)
    window.add_widget(root)
    ctl.start()
    drive.wait_for(lambda: ctl.reachable, 15, "the first status")
    log_in(root, drive)
    yield root
    window.remove_widget(root)
    ctl.stop()
    drive.pump(1)


def remote(service: ServiceProcess, path: str = "/api/status") -> Any:
    with RigClient(service.url) as client:
        return client.get(path)


def program_in_force(service: ServiceProcess) -> dict[str, Any]:
    return remote(service)["therapy"]["program"]


def type_in(drive, form, key: str, text: str) -> None:
    """Tap field *key* (swiped into view), clear it and type *text* on the keypad."""
    button = form._buttons[key]
    reveal(form.ids.field_scroll, button)
    drive.tap(button, frames=1)
    if form.values.get(key) is not None:
        drive.tap(form.ids.clear_key, frames=1)
    keys = {b.key: b for b in form.keypad_box.children}
    for char in text:
        drive.tap(keys[char], frames=1)
    drive.pump(1)
    assert form.values[key] == float(text), (key, form.values[key])


def action(form, text: str):
    return next(b for b in form.actions_box.children if getattr(b, "text", "") == text)


def open_program(root: KioskRoot, drive):
    root.show("program")
    drive.pump(2)
    return root.manager.get_screen("program")


def review_and_confirm(root: KioskRoot, drive, screen, shot: str) -> dict[str, tuple[str, str]]:
    """Review, check the Finish screen's rows, confirm; the rows (label → old, new)."""
    drive.tap(action(screen.form, "Review"))
    drive.wait_for(lambda: root.manager.current == "finish", 20, "the Finish screen")
    finish = root.manager.get_screen("finish")
    rows = {label: (old, new) for label, old, new in finish.rows}
    assert len(rows) == len(finish.rows), "row names are unique"
    assert [row["changed"] for row in finish.ids.rows.data] == [o != n for _l, o, n in finish.rows]
    shown = finish.ids.rows.layout_manager.children
    assert shown and all(cell.font_size >= 18 for row in shown for cell in row.children)
    assert all(cell.texture_size[1] <= cell.height for row in shown for cell in row.children)
    drive.screenshot(shot)
    drive.tap(finish.ids.confirm)
    drive.wait_for(lambda: root.manager.current == "home", 20, "the confirmation")
    return rows


@pytest.mark.slow(seconds=18)
def test_a_clinician_programs_every_mode_and_a_patient_bolus_by_touch(live, service, drive):
    # Continuous with a patient bolus.
    screen = open_program(live, drive)
    form = screen.form
    drive.tap(screen.ids.mode_continuous)
    type_in(drive, form, "concentration_ug_per_ml", "500")
    type_in(drive, form, "dose_ug_per_day", "300")
    assert "Daily total 300.0 µg/day = 0.600 mL/day = 25.00 µL/h" in form.summary
    drive.tap(screen.ids.patient_bolus_toggle)
    type_in(drive, form, "pb_dose_ug", "20")
    type_in(drive, form, "pb_lockout_min", "120")
    rows = review_and_confirm(live, drive, screen, "modes-finish-continuous")
    assert rows["Patient bolus dose"] == ("—", "20.0 µg")
    assert rows["Empty, every bolus taken"][1] != "—"
    program = program_in_force(service)
    assert (program["mode"], program["dose_ug_per_day"]) == ("continuous", 300)
    assert program["patient_bolus"] == {
        "dose_ug": 20,
        "duration_min": 10,
        "lockout_min": 120,
        "max_per_24h": 4,
    }

    # Flex: three steps, one added and removed, reordered twice, Saturday its own day.
    screen = open_program(live, drive)
    drive.tap(screen.ids.mode_flex)
    drive.tap(action(screen.form, "Steps…"))
    assert live.manager.current == "flex"
    flex = live.manager.get_screen("flex")
    form = flex.form
    type_in(drive, form, "dose_0", "240")
    drive.tap(action(form, "Add"))
    type_in(drive, form, "start_1", "0700")
    type_in(drive, form, "dose_1", "400")
    drive.tap(action(form, "Add"))
    type_in(drive, form, "start_2", "1900")
    type_in(drive, form, "dose_2", "240")
    assert "3 steps · Daily total 320.0 µg/day" in form.summary
    drive.tap(action(form, "Add"))
    assert len(flex.steps) == 4
    drive.tap(action(form, "Remove"))
    drive.tap(form._buttons["dose_1"])
    drive.tap(action(form, "Down"))  # 400 µg/day moves to 19:00, the total follows
    assert [dose for _start, dose in flex.steps] == [240, 240, 400]
    assert "Daily total 273.3 µg/day" in form.summary
    drive.tap(action(form, "Up"))
    assert "Daily total 320.0 µg/day" in form.summary
    drive.tap(flex.ids.day_sat)
    drive.tap(form._buttons["dose_2"])
    drive.tap(action(form, "Remove"))
    drive.tap(action(form, "Remove"))
    type_in(drive, form, "dose_0", "300")
    assert "(Sat 300.0)" in form.summary
    drive.screenshot("modes-flex-editor")
    drive.tap(action(form, "Done"))
    assert live.manager.current == "program"
    assert screen.ids.patient_bolus_toggle.state == "down"  # the patient bolus stays
    rows = review_and_confirm(live, drive, screen, "modes-finish-flex")
    assert rows["Flex step 2"] == ("—", "from 07:00  400.0 µg/day")
    assert rows["Sat step 1"] == ("—", "from 00:00  300.0 µg/day")
    program = program_in_force(service)
    assert program["steps"] == [
        {"start": "00:00", "dose_ug_per_day": 240},
        {"start": "07:00", "dose_ug_per_day": 400},
        {"start": "19:00", "dose_ug_per_day": 240},
    ]
    assert program["weekdays"] == {"sat": [{"start": "00:00", "dose_ug_per_day": 300}]}
    assert program["patient_bolus"]["dose_ug"] == 20
    home = live.manager.get_screen("home")
    drive.wait_for(lambda: "Flex step" in home.ids.program_detail.text, 5, "the flex block")
    assert home.texts["mode"].startswith("Flex")  # not "Bridge bolus" once it has ended
    drive.screenshot("modes-home-flex")

    # Periodic bolus: a background and a bolus every 6 h from 06:00, patient bolus kept.
    screen = open_program(live, drive)
    form = screen.form
    drive.tap(screen.ids.mode_periodic_bolus)
    type_in(drive, form, "background_dose_ug_per_day", "200")
    type_in(drive, form, "bolus_dose_ug", "25")
    assert form.values["every_h"] == 6  # the defaults shown: 30 min every 6 h
    type_in(drive, form, "first_at", "0530")
    assert "Daily total 300.0 µg/day" in form.summary
    drive.screenshot("modes-program-periodic")
    rows = review_and_confirm(live, drive, screen, "modes-finish-periodic")
    assert rows["Boluses"] == ("—", "every 6 h from 05:30")
    program = program_in_force(service)
    assert program["mode"] == "periodic_bolus"
    assert (program["every_h"], program["first_at"], program["bolus_dose_ug"]) == (6, "05:30", 25)
    assert program["patient_bolus"]["lockout_min"] == 120

    # Priming first, on a 30 cm catheter, then the periodic program in force.
    screen = open_program(live, drive)
    form = screen.form
    drive.tap(screen.ids.lead_priming)
    type_in(drive, form, "length_cm", "30")
    assert "Priming: 126 µL at 1,000.00 µL/h for 8 min, then:" in form.summary
    rows = review_and_confirm(live, drive, screen, "modes-finish-priming")
    assert rows["Lead-in bolus volume"][1] == "126.0 µL"
    program = program_in_force(service)
    assert program["mode"] == "priming_bolus" and program["rate_ul_per_h"] == 1000
    assert program["then"]["mode"] == "periodic_bolus"
    assert remote(service)["catheter"]["length_cm"] == 30  # kept with the pump

    # Bridge first (the pump's catheter already filled in), then continuous.
    screen = open_program(live, drive)
    form = screen.form
    drive.tap(screen.ids.mode_continuous)
    drive.tap(screen.ids.lead_bridge)
    assert form.values["length_cm"] == 30
    assert (form.values["old_concentration_ug_per_ml"], form.values["old_dose_ug_per_day"]) == (
        500,
        300,
    )  # from the program in force
    type_in(drive, form, "concentration_ug_per_ml", "1000")
    type_in(drive, form, "dose_ug_per_day", "300")
    assert "Bridge (old 500 µg/mL in the line): 126 µL at 25.00 µL/h for 5 h 02 min" in (
        form.summary
    )
    drive.screenshot("modes-program-bridge")
    rows = review_and_confirm(live, drive, screen, "modes-finish-bridge")
    assert rows["Old concentration"] == ("—", "500 µg/mL")
    program = program_in_force(service)
    assert (program["mode"], program["concentration_ug_per_ml"]) == ("bridge_bolus", 1000)
    assert program["then"]["mode"] == "continuous"

    # A single bolus, then stopped.
    screen = open_program(live, drive)
    form = screen.form
    drive.tap(screen.ids.mode_single_bolus)
    assert screen.ids.patient_bolus_toggle.disabled
    type_in(drive, form, "dose_ug", "40")
    review_and_confirm(live, drive, screen, "modes-finish-single")
    program = program_in_force(service)
    assert (program["mode"], program["dose_ug"], program["duration_min"]) == (
        "single_bolus",
        40,
        60,
    )
    screen = open_program(live, drive)
    drive.tap(screen.ids.mode_stopped)
    rows = review_and_confirm(live, drive, screen, "modes-finish-stopped")
    assert rows["Mode"] == ("Single bolus", "Stopped")
    assert program_in_force(service)["mode"] == "stopped"


FLEX_WITH_PATIENT_BOLUS = {
    "mode": "flex",
    "drug": "baclofen",
    "concentration_ug_per_ml": 500,
    "steps": [
        {"start": "00:00", "dose_ug_per_day": 240},
        {"start": "07:00", "dose_ug_per_day": 400},
        {"start": "19:00", "dose_ug_per_day": 240},
    ],
    "patient_bolus": {"dose_ug": 25, "duration_min": 10, "lockout_min": 180, "max_per_24h": 4},
}


def test_a_refill_at_a_new_concentration_ends_with_the_bridge_then_the_flex_program(
    live, service, drive
):
    from tests.service.conftest import confirm_program

    with RigClient(service.url) as client:  # the program before the refill (set up, not walked)
        client.login("clinician", "2222")
        confirm_program(client, FLEX_WITH_PATIENT_BOLUS)
        client.post("/api/alarms/acknowledge-all")  # a watchdog trip on a loaded machine
        client.post("/api/start")
        client.request("PUT", "/api/settings", json={"time_compression": 20000})
    live.show("refill")
    drive.pump(2)
    refill = live.manager.get_screen("refill")
    drive.wait_for(lambda: refill.state == "running", 10, "delivery")
    assert refill.ids.pump_state.text == "Pump state: RUNNING"
    drive.tap(refill.ids.stop_pump)
    drive.wait_for(lambda: refill.ids.pump_state.text == "Pump state: STOPPED", 10, "the stop")
    drive.tap(refill.ids.to_withdrawn)
    expected_ml = remote(service)["therapy"]["reservoir"]["volume_ml"]
    type_in(drive, refill.form, "withdrawn_ml", f"{expected_ml:.2f}")
    drive.tap(action(refill.form, "Next"))
    drive.wait_for(lambda: refill.step == "verdict", 10, "the verdict")
    drive.tap(refill.ids.to_fill)
    type_in(drive, refill.form, "volume_ml", "20")
    type_in(drive, refill.form, "concentration_ug_per_ml", "1000")
    drive.tap(action(refill.form, "Next"))
    drive.wait_for(lambda: refill.step == "done", 10, f"the fill ({refill.message})")
    assert "20.00 mL of 1,000 µg/mL" in refill.ids.result.text
    drive.tap(refill.ids.refill_finish)
    assert refill.step == "bridge"
    drive.wait_for(lambda: "500 µg/mL to 1,000 µg/mL" in refill.bridge_text, 5, "the offer")
    drive.screenshot("modes-refill-bridge")

    # Leaving: Home shows the new concentration, and Start is refused by the service.
    live.show("home")
    drive.pump(2)
    home = live.manager.get_screen("home")
    assert "Refilled at 1,000 µg/mL" in home.ids.program_detail.text
    drive.tap(home.ids.start_stop)
    drive.wait_for(lambda: "bridge bolus" in home.message, 10, "the refusal")
    assert remote(service)["state"] == "stopped"
    drive.screenshot("modes-home-bridge-pending")

    # Back on Refill the offer is still there; the bridge pre-fills the new concentration and
    # follows the flex program with its patient bolus.
    live.show("refill")
    drive.pump(2)
    assert refill.step == "bridge"
    drive.tap(refill.ids.bridge)
    screen = live.manager.get_screen("program")
    assert live.manager.current == "program"
    values = screen.form.values
    assert (values["concentration_ug_per_ml"], values["old_concentration_ug_per_ml"]) == (
        1000,
        500,
    )
    assert (screen.mode, screen.lead_in, screen.patient_bolus) == ("flex", "bridge", True)
    catheter_ul = remote(service)["catheter"]["volume_ul"]  # the pump's, as last programmed
    assert f"Bridge (old 500 µg/mL in the line): {catheter_ul:.0f} µL at 26.67 µL/h" in (
        screen.form.summary
    )
    drive.screenshot("modes-program-bridge-after-refill")
    rows = review_and_confirm(live, drive, screen, "modes-finish-bridge-after-refill")
    assert rows["Then"] == ("—", "Flex")
    assert rows["Patient bolus dose"] == ("25.0 µg", "25.0 µg")
    status = remote(service)
    assert status["state"] == "running" and status["therapy"]["phase"] == "bridge_bolus"
    assert status["refill"]["bridge_pending"] is None
    assert home.message == "Bridge bolus running"
    drive.wait_for(lambda: home.texts["mode"] == "Bridge bolus", 5, "Home's program line")

    # The bridge ends and the flex program runs on, its patient bolus with it.
    drive.wait_for(
        lambda: live.ctl.status["therapy"]["phase"] not in ("bridge_bolus",), 30, "the bridge"
    )
    status = remote(service)
    assert status["state"] == "running"
    assert status["therapy"]["mode"] == "bridge_bolus"  # the program: bridge, then flex
    assert status["therapy"]["program"]["then"]["mode"] == "flex"
    assert status["therapy"]["settings"]["patient_bolus"]["dose_ug"] == 25
    drive.wait_for(lambda: "Flex step" in home.ids.program_detail.text, 5, "the flex block")
    assert home.texts["mode"].startswith("Flex")  # not "Bridge bolus" once it has ended
    drive.screenshot("modes-home-flex-after-bridge")
