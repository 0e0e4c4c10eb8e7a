"""Watchdog: a stalled delivery loop disables the stepper; systemd gets readiness and pings."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hal.bench import build_bench
from rig.service.books import RigStore
from rig.service.config import load_config
from rig.service.loop import RigService
from tests.service.conftest import program_json, wait_for


class StallableService(RigService):
    """The rig service with a way to stall its delivery loop on purpose."""

    def stall_loop(self, seconds: float) -> None:
        """Hold the lock every loop tick needs, as a loop stuck in a slow call would."""
        with self._lock:
            time.sleep(seconds)


@pytest.fixture
def running_service(tmp_path):
    store = RigStore.open(tmp_path / "rig.db")
    bench = build_bench(load_config(), "sim")
    service = StallableService(bench, store, time_compression=1440.0)
    service.start()
    yield service
    service.shutdown()
    bench.close()
    store.close()


@pytest.mark.timeout(60)
def test_stalled_loop_disables_the_stepper_and_raises_a_high_alarm(running_service):
    service = running_service
    from rig.therapy.programs import Program

    proposal = service.propose(Program.model_validate(program_json("continuous")))
    service.confirm(proposal.proposal_id, False, "clinician")
    assert wait_for(lambda: service.bench.drive.is_enabled, 2.0)
    stall = threading.Thread(target=service.stall_loop, args=(2.0,))
    stall.start()
    # Within the watchdog's limit (1 s) plus its polling period the motor is released.
    assert wait_for(lambda: not service.bench.drive.is_enabled, 1.8, period_s=0.02)
    steps = service.bench.stepper.steps_issued
    time.sleep(0.3)
    assert service.bench.stepper.steps_issued == steps
    stall.join()
    assert wait_for(lambda: "watchdog" in service.alarms.active_codes, 2.0)
    status = service.status()
    assert status["state"] == "stopped"
    assert any(a["code"] == "watchdog" and a["priority"] == "high" for a in status["alarms"])


@pytest.mark.timeout(60)
def test_under_systemd_the_service_reports_ready_and_pings_the_watchdog(service_factory, tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10.0)
    service = service_factory(env={"NOTIFY_SOCKET": path})
    service.start()
    messages = set()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and not {"READY=1", "WATCHDOG=1"} <= messages:
        messages.add(listener.recv(256).decode())
    listener.close()
    assert {"READY=1", "WATCHDOG=1"} <= messages
