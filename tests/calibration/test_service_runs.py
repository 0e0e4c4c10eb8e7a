"""Calibration inside the rig service (VirtualRig: the real service on a virtual clock): the
run in state "calibrating" with therapy stopped, cancellable; its books; applying the result
with versions and rollback, after which delivery and the flow monitor use the calibrated
µL per step."""

from __future__ import annotations

import threading

import pytest

from rig.common.inputs import InputError
from rig.service.config import parse_config
from rig.service.loop import StateConflict
from rig.service.virtual import VirtualRig
from tests.calibration.conftest import TRUE_RATIO

CONTINUOUS = {
    "drug": "baclofen",
    "concentration_ug_per_ml": 500,
    "mode": "continuous",
    "dose_ug_per_day": 400,
}
QUICK_VOLUME = {"volumes_ul": [20, 40, 80, 160], "settle_s": 5, "blank_s": 0, "prime_ul": 20}


@pytest.fixture
def rig(tmp_path, wide_bore):
    with VirtualRig(tmp_path, config=wide_bore) as rig:
        rig.run(1.0)  # the flow sensor's first reading is ready
        yield rig


def finish(rig: VirtualRig) -> dict:
    jobs = rig.service.calibrations
    assert jobs.wait_finished(60.0)
    assert jobs.job is not None
    return jobs.job.status()


def test_a_volume_run_calibrates_and_applying_it_moves_every_user_of_ul_per_step(
    rig, tmp_path, wide_bore
):
    service = rig.service
    nominal = service.ul_per_step
    started = service.calibrations.start("volume", QUICK_VOLUME, "engineer")
    status = finish(rig)
    assert status["state"] == "done", status
    run = service.store.calibration_run(started["run_id"])
    assert run["state"] == "done" and run["role"] == "engineer"
    assert run["in_force"]["ul_per_step"] == pytest.approx(nominal)
    assert run["params"]["volumes_ul"] == [20, 40, 80, 160]
    assert [s["steps"] for s in run["samples"]] == [p["steps"] for p in run["result"]["points"]]
    assert run["result"]["coefficient"] == pytest.approx(TRUE_RATIO, rel=0.003)
    # Nothing of the calibration's pumping is delivery, but it has left the syringe.
    assert service.store.delivered_totals()[1] == pytest.approx(0.0)
    pumped_ml = (run["result"]["points"][-1]["steps"] + round(20 / nominal)) * nominal / 1000
    left_ml = 20.0 - pumped_ml
    assert service.store.reservoir()["volume_ml"] == pytest.approx(left_ml, abs=1e-6)
    assert service.engine.state.reservoir.volume_ml == pytest.approx(left_ml, abs=1e-6)
    # By the true bore the syringe holds 3 % more than its marks say, before and after (and the
    # first steps only took up the backlash, 6 µL).
    syringe_ml = rig.bench.sim.bench.syringe_volume_ml
    assert syringe_ml == pytest.approx(left_ml * TRUE_RATIO + 0.006, abs=0.001)

    applied = service.calibrations.apply(started["run_id"], "engineer")
    measured = run["result"]["ul_per_step_measured"]
    assert applied["version"] == 1
    for user in (service.ul_per_step, service.motion.ul_per_step, service.flow_monitor.ul_per_step):
        assert user == pytest.approx(measured)
    assert service.bench.ul_per_microstep == pytest.approx(measured)

    # Delivery now runs the step rate the true bore needs: the beaker gets what the plan says.
    rig.confirm(CONTINUOUS)
    service.start_delivery("clinician")
    physics = rig.bench.sim.bench
    pumped_before = physics.outlet_volume_ul + physics.line_volume_ul
    rig.run(30.0)
    delivered_ul = service.engine.state.delivered_ul
    assert delivered_ul > 25
    pumped_ul = physics.outlet_volume_ul + physics.line_volume_ul - pumped_before
    assert pumped_ul == pytest.approx(delivered_ul, rel=0.006)  # uncalibrated: 3 % more
    assert "over_infusion" not in rig.active_codes()

    # A restart keeps the calibration in force (the books hold it).
    service.stop_delivery("clinician")
    rig.close()
    with VirtualRig(tmp_path, config=wide_bore) as again:
        assert again.service.ul_per_step == pytest.approx(measured)
        assert again.service.motion.ul_per_step == pytest.approx(measured)
        assert again.service.calibrations.in_force()["volume_version"] == 1


def test_rollback_restores_the_version_before(rig):
    jobs = rig.service.calibrations
    nominal = rig.service.ul_per_step
    first = jobs.start("volume", QUICK_VOLUME, "engineer")
    finish(rig)
    jobs.apply(first["run_id"], "engineer")
    calibrated = rig.service.ul_per_step
    assert calibrated != nominal
    back = jobs.rollback("volume", "engineer")
    assert back == {"kind": "volume", "version": 2, "value": None}
    assert rig.service.ul_per_step == pytest.approx(nominal)
    with pytest.raises(InputError, match="already nominal"):
        jobs.rollback("volume", "engineer")
    history = rig.service.store.calibration_history("volume")
    assert [(h["version"], h["action"]) for h in history] == [(1, "apply"), (2, "rollback")]


def test_the_run_needs_therapy_stopped_and_shows_calibrating(rig):
    rig.confirm(CONTINUOUS)
    rig.service.start_delivery("clinician")
    with pytest.raises(StateConflict, match="stop delivery"):
        rig.service.calibrations.start("volume", QUICK_VOLUME, "engineer")
    rig.service.stop_delivery("clinician")
    states, progress = [], []

    def sleep(seconds: float) -> None:
        states.append(rig.service.state_name)
        progress.append(rig.service.telemetry.calibration)
        rig.run(seconds)

    rig.service.calibrations.sleep = sleep
    rig.service.calibrations.start("volume", QUICK_VOLUME, "engineer")
    finish(rig)
    assert set(states) == {"calibrating"}
    # The telemetry stream carries the run's progress while it goes on, and nothing after.
    reported = [p for p in progress if p is not None]
    assert reported and reported[-1]["procedure"] == "volume"
    assert [p["fraction"] for p in reported] == sorted(p["fraction"] for p in reported)
    assert rig.service.telemetry.calibration is None
    assert rig.service.state_name == "stopped"
    assert rig.active_codes() == []


def test_cancel_stops_the_motor_at_the_next_wait_and_books_it(rig):
    jobs = rig.service.calibrations

    def sleep(seconds: float) -> None:
        rig.run(seconds)
        if jobs.job.samples:  # cancel once the first point is weighed
            jobs.cancel()

    jobs.sleep = sleep
    started = jobs.start("volume", QUICK_VOLUME, "engineer")
    status = finish(rig)
    assert status["state"] == "cancelled"
    assert rig.bench.stepper.rate_steps_per_s == 0
    assert not rig.bench.drive.is_enabled
    run = rig.service.store.calibration_run(started["run_id"])
    assert run["state"] == "cancelled" and run["result"] is None
    assert len(run["samples"]) == 1
    with pytest.raises(InputError, match="cancelled, not done"):
        jobs.apply(started["run_id"], "engineer")


def test_bad_requests_are_named(rig):
    jobs = rig.service.calibrations
    with pytest.raises(InputError, match="'weight' is not a calibration; allowed: volume"):
        jobs.start("weight", {}, "engineer")
    with pytest.raises(InputError, match="settle_s"):
        jobs.start("volume", {"settle_s": -1}, "engineer")
    with pytest.raises(InputError, match="no calibration run 99"):
        jobs.apply(99, "engineer")
    assert rig.service.store.calibration_runs() == []


def test_an_applied_flow_sensor_calibration_corrects_what_the_flow_monitor_reads(tmp_path):
    config = parse_config({"sim": {"sensor_offset_ul_per_min": 3.0, "sensor_noise_ul_per_min": 0}})
    with VirtualRig(tmp_path, config=config) as rig:
        rig.run(1.0)
        assert rig.service.telemetry.sensor_ul_per_min == pytest.approx(3.0, abs=0.2)
        quick = {"rates_ul_per_min": [200, 400, 800], "settle_min": 0.2, "window_min": 0.4}
        started = rig.service.calibrations.start("flow-sensor", quick, "engineer")
        assert finish(rig)["state"] == "done"
        applied = rig.service.calibrations.apply(started["run_id"], "engineer")
        assert applied["kind"] == "flow_sensor"
        assert applied["value"]["offset_ul_per_min"] == pytest.approx(-3.0, abs=1.0)
        rig.confirm(CONTINUOUS)
        rig.service.start_delivery("clinician")
        rig.run(3.0)
        telemetry = rig.service.telemetry
        # Uncorrected, the sensor read 3 µL/min and more above the flow; now it reads the flow.
        assert telemetry.sensor_ul_per_min == pytest.approx(telemetry.commanded_ul_per_min, abs=1.0)
        assert rig.active_codes() == []


def test_a_calibration_made_for_another_syringe_is_not_used(rig):
    nominal = rig.service.ul_per_step
    value = {"ul_per_step": 0.05, "coefficient": 1.4, "ul_per_step_nominal": 0.0357}
    rig.store.add_calibration("volume", "apply", value, run_id=None, role="engineer")
    rig.service.calibrations._restore()  # as at the next start
    assert rig.bench.calibrated_ul_per_microstep is None
    assert rig.bench.ul_per_microstep == pytest.approx(nominal)


def test_a_shutdown_cancels_the_run_and_books_it(tmp_path, wide_bore):
    rig = VirtualRig(tmp_path, config=wide_bore)
    rig.run(1.0)
    jobs = rig.service.calibrations
    running = threading.Event()

    def sleep(seconds: float) -> None:
        running.set()
        rig.run(seconds)

    jobs.sleep = sleep
    started = jobs.start("volume", QUICK_VOLUME, "engineer")
    assert running.wait(10.0)
    rig.close()  # the service's shutdown cancels the run at its next wait
    assert jobs.job.state == "cancelled"
    with VirtualRig(tmp_path, config=wide_bore) as again:
        assert again.store.calibration_run(started["run_id"])["state"] == "cancelled"
