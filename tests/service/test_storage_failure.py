"""Books that cannot be written: fail safe first, refuse changes, apply nothing that is not stored.

In-process on a virtual clock, with the real API app (FastAPI's test client) over a
:class:`~rig.service.virtual.VirtualRig`, so the failure lands exactly where a test puts it:

- ``PRAGMA query_only``: SQLite itself refuses every write (``SQLITE_READONLY``);
- ``max_page_count``: the database may not grow (``SQLITE_FULL``, a full disk as SQLite sees it);
- a store whose transactions fail at the commit (everything inside succeeded).

For every state-changing endpoint: the request that first meets the failure answers 507 and
what it asked for was not applied; once the service knows, every change is refused with 507 and
nothing moves at all. The delivery loop's own commit failing stops the motor and raises the
high storage alarm on the buzzer and the LED within a second, without the books; what happened
meanwhile is written once the books can be written again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from rig.service.api import create_app
from rig.service.auth import Authenticator
from rig.service.books import StorageError
from rig.service.virtual import VirtualRig
from tests.service.conftest import program_json

BOLUS_PROGRAM = {
    **program_json("continuous"),
    "patient_bolus": {"dose_ug": 25, "duration_min": 10, "lockout_min": 10, "max_per_24h": 24},
}
FILL = {"volume_ml": 18.0, "concentration_ug_per_ml": 500.0}


class Rig:
    """A virtual rig, its API app and a clinician session; storage can be broken and mended."""

    def __init__(self, rig: VirtualRig) -> None:
        self.rig = rig
        self.service = rig.service
        self.store = rig.store
        self.http = TestClient(create_app(rig.service, Authenticator(rig.store)))
        self.session = self.login("clinician", "2222")
        self._commit_fails = False
        self.bursts: list[int] = []
        self.led: list[tuple[str, float | None]] = []
        buzzer, led = rig.bench.buzzer, rig.bench.led
        real_burst, real_show = buzzer.burst, led.show

        def burst(frequency_hz, pulses, *args, **kwargs):
            self.bursts.append(pulses)
            return real_burst(frequency_hz, pulses, 0.0001, 0.0001)

        def show(colour, flash_hz=None):
            self.led.append((colour, flash_hz))
            return real_show(colour, flash_hz)

        buzzer.burst, led.show = burst, show

    def login(self, role: str, pin: str) -> str:
        reply = self.http.post("/api/login", json={"role": role, "pin": pin})
        assert reply.status_code == 200, reply.text
        return reply.json()["token"]

    def call(self, method: str, path: str, body: Any = None, session: str | None = None):
        headers = {"X-Session": session or self.session}
        return self.http.request(method, path, json=body, headers=headers)

    def post(self, path: str, body: Any = None):
        reply = self.call("POST", path, body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def confirm(self, program: dict) -> None:
        proposal = self.post("/api/program/propose", {"program": program})
        body = {"proposal_id": proposal["proposal_id"], "accept_warnings": True}
        self.post("/api/program/confirm", body)

    def break_storage(self, how: str) -> None:
        db = self.store._db
        if how == "readonly":
            db.execute("PRAGMA query_only = 1")
        elif how == "full":
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
        elif how == "commit":
            self._commit_fails = True
            real_write = type(self.store)._write
            rig = self

            @contextlib.contextmanager
            def failing_commit(store, operation):
                outermost = store._transaction_thread is None
                with real_write(store, operation) as opened:
                    yield opened
                    if rig._commit_fails and outermost:
                        raise sqlite3.OperationalError("disk I/O error (at the commit)")

            self.store._write = failing_commit.__get__(self.store)
        else:
            raise ValueError(how)

    def mend_storage(self) -> None:
        db = self.store._db
        db.execute("PRAGMA query_only = 0")
        db.execute("PRAGMA max_page_count = 1073741823")
        self._commit_fails = False
        self.store.__dict__.pop("_write", None)

    def snapshot(self) -> dict[str, Any]:
        """Everything a refused request must leave alone (in memory and on the books)."""
        service = self.service
        engine = service.engine.state
        sim = self.rig.bench.sim
        return {
            "engine": engine.model_dump(mode="json"),
            "revision": engine.revision,
            "halted": engine.halted,
            "steps_per_s": service.motion.steps_per_s,
            "steps_issued": self.rig.bench.stepper.steps_issued,
            "alarms": [
                (a["code"], a["acknowledged"], a["condition_present"])
                for a in service.alarms.active_alarms()
            ],
            "silence_s": service.alarms.silence_remaining_s(),
            "time_compression": service.clock.time_compression_nominal,
            "bench_faults": sim.bench.faults.model_dump(),
            "sensor_faults": str(sim.flow_sensor.faults),
            "syringe_ml": sim.bench.syringe_volume_ml,
            "pending_refill": service._pending_refill,
            "reservoir": service._reservoir,
            "books": self.books(),
        }

    def books(self) -> dict[str, Any]:
        """Rows per table (refusals may still reach the audit log: only accepted calls count)."""
        with self.store._read("test snapshot") as db:
            counts = {
                table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("programs", "events", "alarms", "boluses", "pins")
            }
            accepted = "SELECT count(*) FROM audit WHERE outcome = 'ok'"
            return counts | {"accepted_audit": db.execute(accepted).fetchone()[0]}

    def active_codes(self) -> list[str]:
        return self.service.alarms.active_codes


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    virtual = VirtualRig(tmp_path)
    made = Rig(virtual)
    made.confirm(BOLUS_PROGRAM)
    virtual.run(3.0)
    yield made
    made.mend_storage()
    made.http.close()
    virtual.close()


# (method, path, body, what it asks for: a check that it did not happen)
def program_unchanged(rig: Rig, before: dict) -> None:
    after = rig.snapshot()
    assert after["engine"]["program"] == before["engine"]["program"]
    assert after["books"]["programs"] == before["books"]["programs"]


def no_bolus_granted(rig: Rig, before: dict) -> None:
    after = rig.snapshot()
    granted = [b for b in after["engine"]["patient_boluses"] if b["cancelled_at"] is None]
    assert len(granted) == len(before["engine"]["patient_boluses"])
    assert after["books"]["boluses"] == before["books"]["boluses"]


def faults_unchanged(rig: Rig, before: dict) -> None:
    after = rig.snapshot()
    assert after["bench_faults"] == before["bench_faults"]
    assert after["sensor_faults"] == before["sensor_faults"]


def compression_unchanged(rig: Rig, before: dict) -> None:
    assert rig.service.clock.time_compression_nominal == before["time_compression"]


def refill_unchanged(rig: Rig, before: dict) -> None:
    after = rig.snapshot()
    assert after["pending_refill"] == before["pending_refill"]
    assert after["reservoir"] == before["reservoir"]
    assert after["engine"]["reservoir"] == before["engine"]["reservoir"]
    assert after["syringe_ml"] == pytest.approx(before["syringe_ml"], abs=0.01)


def alarms_unacknowledged(rig: Rig, before: dict) -> None:
    after = {code: ack for code, ack, _present in rig.snapshot()["alarms"]}
    for code, ack, _present in before["alarms"]:
        assert after.get(code, ack) == ack


def not_silenced(rig: Rig, before: dict) -> None:
    assert rig.service.alarms.silence_remaining_s() == before["silence_s"]


def pins_unchanged(rig: Rig, before: dict) -> None:
    assert rig.login("clinician", "2222")


ENDPOINTS = [
    ("POST", "/api/program/confirm", "confirm", program_unchanged),
    ("POST", "/api/bolus/patient", None, no_bolus_granted),
    ("POST", "/api/faults", {"occlusion_fraction": 1.0, "sensor_dropout": True}, faults_unchanged),
    ("DELETE", "/api/faults", None, faults_unchanged),
    ("PUT", "/api/settings", {"time_compression": 60}, compression_unchanged),
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": 12.0}, refill_unchanged),
    ("POST", "/api/refill/fill", FILL, refill_unchanged),
    ("POST", "/api/alarms/acknowledge-all", None, alarms_unacknowledged),
    ("POST", "/api/alarms/{alarm_id}/acknowledge", None, alarms_unacknowledged),
    ("POST", "/api/alarms/silence", {"duration_s": 60}, not_silenced),
    ("PUT", "/api/pins/clinician", {"new_pin": "4826", "old_pin": "2222"}, pins_unchanged),
    ("POST", "/api/start", None, None),
    ("POST", "/api/stop", None, None),
    ("POST", "/api/recovery/resume", None, None),
    ("POST", "/api/program/propose", {"program": BOLUS_PROGRAM}, program_unchanged),
    ("POST", "/api/diagnostics/loop/reset", None, None),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _body, _check in ENDPOINTS]


def prepare(rig: Rig, path: str, body: Any) -> tuple[str, Any]:
    """Bring the rig to where the request would succeed; the path and body to send."""
    if body == "confirm":
        proposal = rig.post("/api/program/propose", {"program": program_json("flex")})
        body = {"proposal_id": proposal["proposal_id"], "accept_warnings": True}
    if path == "/api/refill/fill":
        rig.post("/api/refill/withdrawn", {"withdrawn_ml": 19.9})
    if path == "/api/faults" and body is None:
        rig.post("/api/faults", {"leak_fraction": 0.2})
    if "alarm" in path:
        rig.post("/api/refill/withdrawn", {"withdrawn_ml": 12.0})  # a discrepancy alarm
        assert "refill_discrepancy" in rig.active_codes()
        alarm_id = rig.service.alarms.active_alarms()[0]["id"]
        path = path.format(alarm_id=alarm_id)
    if path == "/api/start":
        rig.post("/api/stop")
    return path, body


@pytest.mark.parametrize("how", ["readonly", "commit"])
@pytest.mark.parametrize(("method", "path", "body", "check"), ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_change_the_books_cannot_take_is_not_applied(rig, how, method, path, body, check):
    path, body = prepare(rig, path, body)
    session = rig.login("engineer", "3333") if "diagnostics" in path else None
    before = rig.snapshot()
    rig.break_storage(how)
    reply = rig.call(method, path, body, session)
    if path == "/api/recovery/resume" or (path == "/api/program/propose" and how != "commit"):
        # Refused before any write (no recovery pending), or nothing to write but the audit.
        assert reply.status_code in (409, 507), reply.text
    else:
        assert reply.status_code == 507, reply.text
        problem = reply.json()["detail"][0]
        assert problem["field"] == "storage"
        assert "nothing from this operation was stored" in problem["message"] or (
            "refused" in problem["message"]
        )
    if check is not None:
        check(rig, before)
    # The failure stops delivery and raises the storage alarm, sounded and shown.
    assert not rig.service.storage_ok
    assert rig.service.motion.steps_per_s == 0
    assert rig.service.engine.state.halted
    assert "storage_failure" in rig.active_codes()
    assert 10 in rig.bursts
    assert ("red", pytest.approx(2.1, abs=0.7)) in rig.led


@pytest.mark.parametrize("how", ["readonly", "full"])
def test_while_the_books_cannot_be_written_every_change_is_refused_and_nothing_moves(rig, how):
    rig.break_storage(how)
    broken_at = rig.rig.now_s
    # The loop's commit fails (at once read-only; full: once the free room in its pages is used).
    while "storage_failure" not in rig.active_codes() and rig.rig.now_s < broken_at + 300:
        rig.rig.run(1.0)
    assert "storage_failure" in rig.active_codes()
    trainee = rig.login("trainee", "1111")  # logging in needs no write: still possible
    engineer = rig.login("engineer", "3333")
    for method, path, body, _check in ENDPOINTS:
        if path == "/api/alarms/silence":
            continue  # the one change allowed: see the test below
        path, body = path.format(alarm_id=1), body
        if body == "confirm":
            body = {"proposal_id": "0" * 32, "accept_warnings": True}
        before = rig.snapshot()
        for session in (None, trainee, engineer):
            reply = rig.call(method, path, body, session)
            if reply.status_code != 403:  # a role that may not do it is told so first
                assert reply.status_code == 507, (path, reply.text)
                assert "changes are refused" in reply.json()["detail"][0]["message"]
            assert rig.snapshot() == before, path
    status = rig.http.get("/api/status")
    assert status.status_code == 200
    assert status.json()["storage"]["ok"] is False
    assert status.json()["state"] == "stopped"


def test_loop_commit_failing_stops_the_motor_and_raises_the_alarm_within_a_second(rig):
    assert rig.service.motion.steps_per_s > 0
    steps = rig.rig.bench.stepper.steps_issued
    rig.break_storage("readonly")
    broken_at = rig.rig.now_s
    while "storage_failure" not in rig.active_codes():
        rig.rig.run(0.05)
        assert rig.rig.now_s - broken_at <= 1.05, "no storage alarm within a second"
    assert rig.service.motion.steps_per_s == 0
    assert not rig.rig.bench.drive.is_enabled
    stopped_at = rig.rig.bench.stepper.steps_issued
    assert stopped_at > steps
    alarm = next(a for a in rig.service.alarms.active_alarms() if a["code"] == "storage_failure")
    assert alarm["priority"] == "high"
    assert alarm["on_books"] is False  # annunciated without the books
    rig.rig.run(0.2)
    assert rig.bursts[-1] == 10
    assert rig.led[-1] == ("red", pytest.approx(2.1, abs=0.7))

    # A fault while the books are broken: its alarm sounds, the motor stays stopped.
    rig.service.bench.sim.bench.inject(free_flow_ul_per_min=50.0)
    rig.rig.run(15.0)  # the monitor lets the line settle after the stop, then judges
    assert "flow_while_stopped" in rig.active_codes()
    assert rig.rig.bench.stepper.steps_issued == stopped_at
    assert rig.service.records.pending > 0

    # The sound can be paused meanwhile (every alarm stays shown); a clinician may, a trainee
    # may not, and the pause is written once the books can be.
    trainee = rig.login("trainee", "1111")
    reply = rig.call("POST", "/api/alarms/silence", {"duration_s": 30}, trainee)
    assert reply.status_code == 403
    reply = rig.call("POST", "/api/alarms/silence", {"duration_s": 30})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"silenced_s": 30}
    assert rig.service.alarms.silence_remaining_s() == pytest.approx(30, abs=0.5)
    assert {"storage_failure", "flow_while_stopped"} <= set(rig.active_codes())

    # Space again: what waited is written, in order; the storage condition has gone.
    rig.service.bench.sim.bench.clear_faults()
    rig.mend_storage()
    rig.rig.run(15.0)  # the line drains, the free-flow condition goes
    assert rig.service.storage_ok
    assert rig.service.records.pending == 0
    storage_events = [e["message"] for e in rig.store.events(kind="storage", limit=10)]
    assert storage_events[0].startswith("storage failure")
    assert "writable again" in storage_events[-1]
    booked = {row["code"] for row in rig.store.alarm_history(20)}
    assert {"storage_failure", "flow_while_stopped"} <= booked
    paused = [e for e in rig.store.events(kind="alarm", limit=50) if "sound paused" in e["message"]]
    assert len(paused) == 1 and "while the books could not be written" in paused[0]["message"]
    assert all(alarm["on_books"] for alarm in rig.service.alarms.active_alarms())
    # Delivery stays stopped until someone acknowledges and starts it again.
    assert rig.call("POST", "/api/start").status_code == 409
    rig.post("/api/alarms/acknowledge-all")
    assert rig.active_codes() == []
    assert rig.call("POST", "/api/start").status_code == 200
    rig.rig.run(1.0)
    assert rig.rig.bench.stepper.steps_issued > stopped_at


def test_a_failed_request_leaves_the_books_and_memory_as_one(rig):
    """After a failed change and the books back, a retry of the same change succeeds once."""
    proposal = rig.post("/api/program/propose", {"program": program_json("flex")})
    body = {"proposal_id": proposal["proposal_id"], "accept_warnings": True}
    history = len(rig.store.program_history())
    rig.break_storage("commit")
    assert rig.call("POST", "/api/program/confirm", body).status_code == 507
    rig.mend_storage()
    rig.rig.run(1.5)
    assert rig.service.storage_ok
    assert len(rig.store.program_history()) == history
    assert rig.service.engine.state.program.mode == "continuous"
    rig.post("/api/alarms/acknowledge-all")
    # The proposal is stale now (the storage alarm halted the pump): propose again.
    proposal = rig.post("/api/program/propose", {"program": program_json("flex")})
    rig.post(
        "/api/program/confirm", {"proposal_id": proposal["proposal_id"], "accept_warnings": True}
    )
    assert len(rig.store.program_history()) == history + 1
    assert rig.service.engine.state.program.mode == "flex"


def test_storage_error_inside_a_transaction_is_not_queued(rig):
    rig.break_storage("readonly")
    with pytest.raises(StorageError), rig.store.transaction("a test"):
        rig.service.records.write("an event", lambda: rig.store.add_event("note", "x"))
    assert rig.service.records.pending == 0


def test_books_that_cannot_be_opened_at_start_sound_the_alarm_until_they_can(tmp_path):
    import threading

    from hal.bench import build_bench
    from rig.service.alarm_manager import TONE_HZ
    from rig.service.books import RigStore
    from rig.service.config import load_config
    from rig.service.server import open_books
    from rig.therapy.alarms import SIGNALS, AlarmPriority

    bench = build_bench(load_config(), "sim")
    books = tmp_path / "rig.db"
    books.mkdir()  # a directory where the database file should be: SQLite cannot open it
    shown: list[tuple[str, float | None]] = []
    bursts: list[float] = []
    bench.led.show = lambda colour, flash_hz=None: shown.append((colour, flash_hz))
    bench.buzzer.burst = lambda frequency_hz, pulses, *a, **k: bursts.append(frequency_hz)
    notes: list[str] = []
    opened: list[RigStore | None] = []
    worker = threading.Thread(
        target=lambda: opened.append(
            open_books(bench, books, notes.append, stopping=threading.Event(), retry_s=0.02)
        )
    )
    try:
        worker.start()
        deadline = time.monotonic() + 5
        while len(bursts) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not opened, "returned without books"
        high = SIGNALS[AlarmPriority.HIGH]
        assert bursts and set(bursts) == {TONE_HZ[AlarmPriority.HIGH]}
        assert shown[-1] == (high.led_colour, high.flash_hz) and high.led_colour == "red"
        assert any(n.startswith("STATUS=storage failure: cannot open the books") for n in notes)
        assert any(n.startswith("EXTEND_TIMEOUT_USEC=") for n in notes)
        books.rmdir()
        worker.join(5)
        store = opened[0]
        assert store is not None
        events = [e for e in store.events() if e["kind"] == "storage"]
        assert len(events) == 1 and "could not be opened" in events[0]["message"]
        store.close()
    finally:
        worker.join(5)
        bench.close()


def test_service_process_waits_for_its_books_instead_of_exiting(tmp_path):
    import signal
    import subprocess
    import sys

    (tmp_path / "rig.db").mkdir()
    serve = ["serve", "--hal", "sim", "--data-dir", str(tmp_path), "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", *serve],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "cannot open the books" in line:
                break
        time.sleep(0.5)
        assert process.poll() is None, "the service exited without its books"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.kill()
        process.wait()
