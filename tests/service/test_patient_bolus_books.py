"""Every patient-bolus request is on the books: 20 clients press the button at once, for a while,
against a real service process.

Each request is an event (granted with its bolus id, or refused with its reason) and an audit
entry; each grant is a row of the bolus table, delivered in full once it ends; nothing is granted
twice or booked without a request.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from typing import Any

import pytest

from rig.client.http import RigClient
from tests.service.conftest import confirm_program, program_json, wait_for

CLIENTS = 20
UL_PER_STEP = 0.0359  # the default 20 mL syringe
RUN_S = 15.0
# A short lockout so that many requests are granted: 15 patient minutes = 0.63 bench s at x1440,
# 5 minutes more than a bolus lasts (back to back, the first one is closed when the next starts and
# what the motor still owed it is booked to the next interval).
PROGRAM = {
    **program_json("continuous"),
    "patient_bolus": {"dose_ug": 10, "duration_min": 10, "lockout_min": 15, "max_per_24h": 24},
}


def all_events(client: RigClient, kind: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = client.get(
            "/api/events", kind=kind, limit=1000, since_id=events[-1]["id"] if events else None
        )
        events += page
        if len(page) < 1000:
            return events


def press_the_button(url: str, pin: str, role: str, seed: int, until: float, answers: list) -> None:
    rng = random.Random(seed)
    with RigClient(url) as client:
        client.login(role, pin)
        while time.monotonic() < until:
            answers.append(client.post("/api/bolus/patient"))
            time.sleep(rng.uniform(0.0, 0.3))


@pytest.mark.slow(seconds=20)
@pytest.mark.timeout(180)
def test_every_request_of_twenty_clients_is_on_the_books(service):
    client = service.client
    confirm_program(client, PROGRAM)
    answers: list[list[dict[str, Any]]] = [[] for _ in range(CLIENTS)]
    until = time.monotonic() + RUN_S
    roles = [("1111", "trainee") if n % 2 else ("2222", "clinician") for n in range(CLIENTS)]
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            press_the_button(service.url, *roles[n], n, until, answers[n])
        except BaseException as error:
            failures.append(error)
            raise

    threads = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    replies = [reply for per_client in answers for reply in per_client]
    granted = [reply for reply in replies if reply["granted"]]
    refused = [reply for reply in replies if not reply["granted"]]
    assert len(granted) >= 10, "too few grants to show anything"
    assert refused, "every request granted: the lockout did not work"

    # Each grant is a patient bolus of the books, once; nothing else is.
    assert wait_for(lambda: client.get("/api/boluses", state="active") == [], 10)
    booked = {row["id"]: row for row in client.get("/api/boluses", limit=1000)}
    granted_ids = [reply["bolus_id"] for reply in granted]
    assert len(set(granted_ids)) == len(granted_ids)
    assert set(granted_ids) == set(booked)
    for row in booked.values():
        assert row["kind"] == "patient"
        assert row["state"] == "done", row
        assert row["delivered_ul"] == pytest.approx(row["volume_ul"], abs=UL_PER_STEP)
        assert row["started_at_utc"] and row["ended_at_utc"]

    # Each request is one event: granted with its bolus id, refused with its reason.
    requests = [e for e in all_events(client, "bolus") if e["detail"]["change"] == "request"]
    assert len(requests) == len(replies)
    assert sorted(e["detail"]["bolus_id"] for e in requests if e["detail"]["granted"]) == sorted(
        granted_ids
    )
    refusals = sorted(e["detail"]["reason"] for e in requests if not e["detail"]["granted"])
    assert refusals == sorted(reply["reason"] for reply in refused)
    assert all(e["role"] in ("trainee", "clinician") for e in requests)

    # ...and one audit entry, accepted or rejected as answered.
    uri = f"file:{service.data_dir / 'rig.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        outcomes = [
            row[0] for row in db.execute("SELECT outcome FROM audit WHERE action = 'bolus.patient'")
        ]
    assert outcomes.count("ok") == len(granted)
    assert outcomes.count("rejected") == len(refused)
