"""The live telemetry stream: at least 5 messages a second with flow, steps, reservoir, alarms."""

from __future__ import annotations

import json
import time

import pytest
from websockets.sync.client import connect

from tests.service.conftest import confirm_program, program_json


@pytest.mark.timeout(60)
def test_telemetry_streams_at_five_hertz_while_infusing(service):
    confirm_program(service.client, program_json("continuous"))
    time.sleep(1.0)
    url = service.url.replace("http://", "ws://") + "/api/telemetry"
    with connect(url, open_timeout=5) as socket:
        first = json.loads(socket.recv(timeout=5))
        started = time.monotonic()
        messages = [json.loads(socket.recv(timeout=5)) for _ in range(15)]
        elapsed_s = time.monotonic() - started
    assert 15 / elapsed_s >= 4.8
    for key in ("measured_ul_per_min", "expected_ul_per_min", "steps", "reservoir_ml", "alarms"):
        assert key in first
    assert messages[-1]["steps"] > first["steps"]
    assert messages[-1]["state"] == "running"
    assert messages[-1]["sensor_ul_per_min"] == pytest.approx(600.0, rel=0.05)
