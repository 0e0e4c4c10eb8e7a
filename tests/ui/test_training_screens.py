"""The trainer panel and the patient monitor against a real service, by touch: choose and start
a scenario, watch the patient, set a fault, show the monitor, end it and read the debrief."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from rig.client.launcher import ServiceProcess
from tests.ui.test_kiosk_service import log_in
from ui.app import KioskRoot, build_root
from ui.controller import Controller

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def live(tmp_path, window, drive) -> Iterator[tuple[KioskRoot, ServiceProcess]]:
    with ServiceProcess(data_dir=tmp_path / "rig", time_scale=2880) as service:
        ctl = Controller(service.url, poll_s=0.25)
        root = build_root(ctl)
        window.add_widget(root)
        ctl.start()
        drive.wait_for(lambda: ctl.reachable, 15, "the first status")
        yield root, service
        root.show("home")  # the training screens poll only while shown
        drive.pump(3)
        window.remove_widget(root)
        ctl.stop()
        drive.pump(1)


def test_trainer_panel_patient_monitor_and_debrief(live, drive):
    root, service = live
    log_in(root, drive)
    nav = {button.text: button for button in root.ids.nav.children}
    drive.tap(nav["Training"])
    panel = root.manager.get_screen("training")
    drive.wait_for(lambda: len(panel.ids.choices.children) >= 7, 10, "the scenarios")
    choice = next(b for b in panel.ids.choices.children if b.text.startswith("Kinked catheter"))
    drive.tap(choice)
    assert panel.selected == "kinked_catheter"
    drive.tap(panel.ids.start)
    drive.wait_for(lambda: panel.headline.startswith("Kinked catheter"), 10, "the run")
    assert "(assessment)" in panel.headline
    # The trainee's view in assessment mode: no hints, no patient curve.
    trainee_view = httpx.get(f"{service.url}/api/training/scenario").json()
    assert "hints" not in trainee_view and "timeline" not in trainee_view
    assert all(action["source"] == "trainee" for action in trainee_view["actions"])
    drive.wait_for(lambda: panel.ids.effect.samples_drawn >= 3, 40, "the effect curve")
    drive.wait_for(lambda: "pruritus" in panel.texts["signs"], 45, "early withdrawal")
    assert panel.texts["mas"] in ("1+", "2", "3", "4")
    drive.screenshot("training-trainer-panel")
    fault = next(b for b in panel.ids.faults.children if b.text == "Disconnect")
    drive.tap(fault)
    drive.wait_for(lambda: panel.message == "Set catheter_disconnection", 10, "the fault")
    drive.tap(panel.ids.monitor)
    monitor = root.manager.get_screen("monitor")
    drive.wait_for(lambda: root.manager.current == "monitor", 5, "the monitor")
    drive.wait_for(lambda: monitor.texts["heart_rate"] != "—", 10, "the vital signs")
    assert "pruritus" in monitor.ids.signs.text and monitor.texts["consciousness"] == "Alert"
    assert "disconnection" not in monitor.messages  # the trainer's faults stay hidden
    drive.screenshot("training-patient-monitor")
    drive.tap(nav["Training"])
    drive.wait_for(lambda: not panel.busy, 10, "the panel to load")  # Stop waits for it too
    drive.tap(panel.ids.stop)
    drive.wait_for(lambda: panel.debrief.startswith("Score"), 10, "the debrief")
    assert "no mastery" in panel.debrief and "open: Assess the patient" in panel.debrief
    drive.wait_for(lambda: "ended" in panel.headline, 10, "the end")
    drive.screenshot("training-debrief")
