"""The engineer's Calibration screens, offscreen with real touches, showing what the service
answers for a genuine (short, virtual-clock) accuracy run: the flow and the trumpet as it forms,
progress and ETA, the results; Start sends the chosen test; the runs list steps and exports."""

from __future__ import annotations

import pytest
from kivy.uix.button import Button

from calibration.accuracy import AccuracyParams, run_accuracy
from calibration.fast import simulated_bench
from calibration.registry import SERVICE_HOOK
from rig.service.config import load_config
from tests.ui.test_kiosk_screens import STATUS

MIN_TARGET_PX = 48


@pytest.fixture(scope="module")
def accuracy_run():
    params = AccuracyParams(rate_ul_per_min=100, duration_min=16, startup_min=6, windows_min=[2, 5])
    with simulated_bench(load_config()) as cb:
        result = run_accuracy(cb, params)
    return params.model_dump(mode="json"), result.model_dump(mode="json")


def listing(params, result, *, done: bool):
    samples = result["samples"] if done else result["samples"][:26]
    job = {
        "run_id": 3,
        "procedure": "accuracy",
        "state": "done" if done else "running",
        "fraction": 1.0 if done else 0.78,
        "eta_s": 0.0 if done else 211.0,
        "message": "sample 25 of 32",
        "samples": len(samples),
        "latest_sample": samples[-1],
        "samples_since": [],
        "result": result if done else None,
        "summary": SERVICE_HOOK.summary(result) if done else [],
        "plots": SERVICE_HOOK.live("accuracy", params, samples),
    }
    in_force = {"ul_per_step": 0.0370208, "ul_per_step_nominal": 0.0359277, "volume_version": 2}
    return {"procedures": [], "in_force": in_force, "job": job}


def recorded_calls(kiosk) -> list[tuple]:
    """The API calls the kiosk makes, recorded instead of sent (no service in these tests)."""
    calls: list[tuple] = []
    kiosk.ctl.call = lambda method, path, body=None, *_a, **_k: calls.append((method, path, body))
    kiosk.ctl._got_status(STATUS)
    return calls


@pytest.fixture
def screen(offline_kiosk, drive):
    calls = recorded_calls(offline_kiosk)
    offline_kiosk.show("calibration")
    drive.pump(3)
    shown = offline_kiosk.manager.get_screen("calibration")
    shown.calls = calls
    return shown


def test_a_running_accuracy_test_draws_flow_and_trumpet_with_progress(screen, accuracy_run, drive):
    params, result = accuracy_run
    screen.show(listing(params, result, done=False))
    drive.pump(3)
    left, right = screen.ids.plot_left, screen.ids.plot_right
    assert left.title.startswith("Flow") and left.drawn == 25 + 2  # Q_i and the set rate
    assert right.title.startswith("Trumpet") and right.drawn == 2 + 2 + 2
    assert screen.eta.startswith("78 %   ETA 3:31")
    assert screen.ids.start.disabled and not screen.ids.cancel.disabled
    for widget in screen.walk(restrict=True):
        if isinstance(widget, Button) and widget.opacity == 1:
            assert widget.height >= MIN_TARGET_PX and widget.width >= MIN_TARGET_PX, widget.text
    drive.screenshot("calibration-running")

    screen.show(listing(params, result, done=True))
    drive.pump(3)
    assert "mean error (%)" in screen.ids.results.text
    assert "Ep(max)" in screen.ids.results.text
    assert screen.ids.apply.disabled  # an accuracy result has nothing to apply
    drive.screenshot("calibration-done")


def test_start_sends_the_chosen_test(screen, drive):
    screen.show({"procedures": [], "in_force": {}, "job": None})
    drive.pump(2)
    accuracy = next(w for w in screen.walk() if isinstance(w, Button) and w.text == "Accuracy")
    drive.tap(accuracy)
    rate = next(w for w in screen.walk() if isinstance(w, Button) and w.text == "150")
    drive.tap(rate)
    drive.tap(screen.ids.start)
    posts = [call for call in screen.calls if call[0] == "POST"]  # the screen also polls (GET)
    body = {"procedure": "accuracy", "params": {"rate_ul_per_min": 150}}
    assert posts == [("POST", "/api/calibration/runs", body)]


def test_the_runs_screen_lists_steps_and_rolls_back(offline_kiosk, drive):
    calls = recorded_calls(offline_kiosk)
    offline_kiosk.show("calibration_runs")
    drive.pump(2)
    runs_screen = offline_kiosk.manager.get_screen("calibration_runs")
    runs = [
        {"id": n, "procedure": p, "state": s, "started_at_utc": f"2026-11-29T1{n}:00:00+00:00",
         "role": "engineer"}
        for n, p, s in ((3, "accuracy", "done"), (2, "volume", "done"), (1, "rate", "cancelled"))
    ]  # fmt: skip
    runs_screen.show(runs)
    drive.pump(2)
    assert runs_screen.selected == 3
    assert runs_screen.ids.runs.text.splitlines()[0].startswith(">    3  accuracy")
    drive.tap(next(w for w in runs_screen.walk() if isinstance(w, Button) and w.text == "Older"))
    assert runs_screen.selected == 2
    drive.screenshot("calibration-runs")
    rollback = next(
        w for w in runs_screen.walk() if isinstance(w, Button) and w.text == "Roll back volume"
    )
    drive.tap(rollback)
    posts = [call for call in calls if call[0] == "POST"]
    assert posts == [("POST", "/api/calibration/rollback", {"kind": "volume"})]
