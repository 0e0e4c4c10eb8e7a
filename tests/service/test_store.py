"""The rig's books on a real SQLite file: durability settings, atomicity, storage failures,
ledger arithmetic, bolus guards, power-loss recovery and concurrent writers."""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

from rig.service.books import (
    AlarmStateError,
    BolusState,
    BolusStateError,
    RigStore,
    RunState,
    StateError,
    StorageError,
)
from rig.service.books import schema as books_schema

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
DAY_S = 86_400.0
# 300 µg/day at 500 µg/mL = 0.600 mL/day = 25.0 µL/h; 0.0204 µL per microstep.
UL_PER_HOUR = 25.0
STEPS_PER_HOUR = round(UL_PER_HOUR / 0.0204)


class FakeWallClock:
    """A settable UTC clock for the store."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "books" / "rig.sqlite"


@pytest.fixture
def clock() -> FakeWallClock:
    return FakeWallClock()


@pytest.fixture
def store(db_path: Path, clock: FakeWallClock) -> Iterator[RigStore]:
    with RigStore.open(db_path, clock=clock) as opened:
        yield opened


def fill(store: RigStore, volume_ml: float = 20.0) -> None:
    store.fill_reservoir(
        drug="baclofen",
        concentration_ug_per_ml=500.0,
        volume_ml=volume_ml,
        capacity_ml=20.0,
        low_threshold_ml=2.0,
        role="clinician",
    )


def deliver_hour(store: RigStore, hour: int, *, bolus_ul: float = 0.0, bolus_id=None) -> dict:
    return store.record_delivery(
        start_at=T0 + timedelta(seconds=hour),
        patient_start_s=hour * 3600.0,
        patient_end_s=(hour + 1) * 3600.0,
        steps=STEPS_PER_HOUR,
        basal_ul=UL_PER_HOUR,
        bolus_ul=bolus_ul,
        bolus_id=bolus_id,
    )


def snapshot(store: RigStore) -> tuple:
    """Everything a failed delivery write could have touched."""
    return (
        store.delivered_totals(),
        store.reservoir(),
        store.ledger(limit=10_000),
        store.boluses(),
        store.events(limit=10_000),
    )


def raw_connection(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# ------------------------------------------------------------------------------ opening


def test_open_creates_directory_and_sets_durable_modes(store, db_path):
    assert db_path.is_file()
    assert store.storage_settings() == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": True,
        "schema_version": books_schema.SCHEMA_VERSION,
    }
    with raw_connection(db_path) as conn:  # WAL is a property of the file itself
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_no_migration_twice(db_path):
    RigStore.open(db_path).close()
    with RigStore.open(db_path):
        pass
    with raw_connection(db_path) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(v,) for v, _, _ in books_schema._MIGRATIONS]


def test_failing_migration_applies_nothing(db_path, monkeypatch):
    broken = ((1, "two tables, the second broken", ("CREATE TABLE a (x)", "CREATE TABLE b (")),)
    monkeypatch.setattr(books_schema, "_MIGRATIONS", broken)
    monkeypatch.setattr(books_schema, "SCHEMA_VERSION", 1)
    with pytest.raises(StorageError, match="migrate"):
        RigStore.open(db_path)
    with raw_connection(db_path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "a" not in tables
    assert "schema_version" not in tables


def test_books_from_a_newer_rig_are_refused(db_path):
    RigStore.open(db_path).close()
    with raw_connection(db_path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', '2099-01-01')")
    with pytest.raises(StorageError, match="newer") as caught:
        RigStore.open(db_path)
    assert caught.value.kind == "schema"


@pytest.mark.parametrize(
    ("contents", "kind"),
    [
        (b"this is not a database\n" * 200, "corrupt"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "corrupt"),
    ],
)
def test_corrupt_file_raises_storage_error(db_path, contents, kind):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(contents)
    with pytest.raises(StorageError) as caught:
        RigStore.open(db_path)
    assert caught.value.kind == kind
    assert str(db_path) in str(caught.value)


def test_unusable_data_directory_raises_storage_error(tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    with pytest.raises(StorageError, match="data directory"):
        RigStore.open(tmp_path / "not-a-directory" / "rig.sqlite")


# -------------------------------------------------------------------------- atomicity


def test_with_conn_is_not_a_transaction_in_sqlite_utils(tmp_path):
    """The library fact the store relies on: only atomic() groups writes."""
    db = sqlite_utils.Database(tmp_path / "fact.sqlite")
    db.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), db.conn:
        db.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("fails half-way")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # half applied
    with pytest.raises(RuntimeError), db.atomic():
        db.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("fails half-way")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 1  # rolled back
    db.close()


@pytest.mark.parametrize(
    "failing_statement",
    [
        "BEFORE INSERT ON ledger",
        "BEFORE UPDATE ON reservoir",
        "BEFORE UPDATE ON ledger_totals",
        "BEFORE UPDATE OF delivered_ul ON boluses",
    ],
)
def test_delivery_failing_at_any_statement_leaves_nothing(store, db_path, failing_statement):
    fill(store)
    bolus_id = store.request_bolus("clinician", 50.0, role="clinician")
    store.start_bolus(bolus_id)
    deliver_hour(store, 0, bolus_ul=5.0, bolus_id=bolus_id)
    before = snapshot(store)
    with raw_connection(db_path) as conn:
        conn.execute(
            f"CREATE TRIGGER fail {failing_statement} BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
    with pytest.raises(StorageError, match="injected"):
        deliver_hour(store, 1, bolus_ul=5.0, bolus_id=bolus_id)
    assert snapshot(store) == before


def test_delivery_against_a_bolus_that_is_not_active_is_rolled_back(store):
    fill(store)
    deliver_hour(store, 0)
    bolus_id = store.request_bolus("patient", 10.0, role="trainee")
    before = snapshot(store)
    with pytest.raises(BolusStateError, match="not active"):
        deliver_hour(store, 1, bolus_ul=1.0, bolus_id=bolus_id)  # the bolus is still pending
    assert snapshot(store) == before


def test_delivery_before_any_fill_is_refused(store):
    with pytest.raises(StateError, match="fill the reservoir"):
        deliver_hour(store, 0)
    assert store.delivered_totals() == (0, 0.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": -1}, "steps >= 0"),
        ({"basal_ul": -1.0}, r"(basal|volume)_ul >= 0"),
        ({"patient_end_s": 10.0}, "patient_end_s >= patient_start_s"),
        ({"bolus_ul": 1.0}, "bolus_id IS NOT NULL"),
        ({"bolus_ul": 1.0, "bolus_id": 999}, "FOREIGN KEY"),
    ],
)
def test_impossible_delivery_is_rejected_by_the_books(store, change, message):
    fill(store)
    before = snapshot(store)
    interval = {
        "start_at": T0,
        "patient_start_s": 100.0,
        "patient_end_s": 200.0,
        "steps": 10,
        "basal_ul": 0.2,
    }
    with pytest.raises(StorageError, match=message) as caught:
        store.record_delivery(**(interval | change))
    assert caught.value.kind == "constraint"
    assert snapshot(store) == before


@pytest.mark.parametrize("table", ["programs", "events", "audit", "ledger"])
@pytest.mark.parametrize("verb", ["UPDATE {table} SET id = id + 100", "DELETE FROM {table}"])
def test_books_are_append_only(store, db_path, table, verb):
    fill(store)
    deliver_hour(store, 0)
    store.add_program({"mode": "stopped"}, role="clinician", summary="stopped")
    store.add_audit("stop", role="clinician", request={}, outcome="ok")
    with raw_connection(db_path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(verb.format(table=table))
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] >= 1


# ------------------------------------------------------------------- storage failures


def test_full_disk_raises_storage_error_and_keeps_the_last_good_state(store):
    fill(store)
    bolus_id = store.request_bolus("clinician", 1e6)
    store.start_bolus(bolus_id)
    page_count = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {page_count + 2}")
    for hour in range(1000):
        before = snapshot(store)
        try:
            deliver_hour(store, hour, bolus_ul=1.0, bolus_id=bolus_id)
        except StorageError as error:
            assert error.kind == "full"
            assert "full" in str(error)
            break
    else:
        pytest.fail("the size limit was never reached")
    assert hour > 0
    assert snapshot(store) == before
    ledger = store.ledger(limit=10_000)
    assert store.delivered_totals()[0] == sum(row["steps"] for row in ledger)
    assert store.reservoir()["volume_ml"] == ledger[-1]["reservoir_after_ml"]
    assert store.bolus(bolus_id)["delivered_ul"] == pytest.approx(len(ledger))
    # Space comes back: the books carry on from where they were.
    store._db.execute("PRAGMA max_page_count = 1073741823")
    deliver_hour(store, hour, bolus_ul=1.0, bolus_id=bolus_id)
    assert store.delivered_totals()[0] == (len(ledger) + 1) * STEPS_PER_HOUR


def test_read_only_database_raises_storage_error(store):
    before = store.events()
    store._db.execute("PRAGMA query_only = 1")
    with pytest.raises(StorageError) as caught:
        store.add_event("note", "cannot be written")
    assert caught.value.kind == "readonly"
    assert store.events() == before


# --------------------------------------------------------------------------- programs


def test_every_program_version_is_kept_and_the_last_is_active(store):
    assert store.active_program() is None
    versions = [
        {"mode": "continuous", "dose_ug_per_day": dose, "concentration_ug_per_ml": 500}
        for dose in (300, 330, 360)
    ]
    ids = [
        store.add_program(program, role="clinician", summary=f"{program['dose_ug_per_day']} µg/day")
        for program in versions
    ]
    history = store.program_history()
    assert [row["id"] for row in history] == ids
    assert [row["program"] for row in history] == versions
    assert store.active_program()["program"] == versions[-1]
    assert [e["detail"]["program_id"] for e in store.events(kind="program")] == ids


# ----------------------------------------------------------------------------- ledger


def test_ledger_totals_reservoir_and_daily_volume(store):
    fill(store, volume_ml=20.0)
    for hour in range(48):
        deliver_hour(store, hour)
    steps, volume_ul = store.delivered_totals()
    assert steps == 48 * STEPS_PER_HOUR
    assert volume_ul == pytest.approx(1200.0)  # 2 days at 0.6 mL/day
    assert store.reservoir()["volume_ml"] == pytest.approx(18.8)
    assert store.delivered_per_patient_day() == pytest.approx({0: 600.0, 1: 600.0})
    assert store.delivered_per_patient_day(since_day=1) == pytest.approx({1: 600.0})


@pytest.mark.parametrize(
    ("start_s", "end_s", "volume_ul", "expected"),
    [
        (DAY_S - 1800, DAY_S + 1800, 25.0, {0: 12.5, 1: 12.5}),
        (DAY_S - 3600, DAY_S, 25.0, {0: 25.0}),  # ends exactly at midnight
        (DAY_S, DAY_S + 3600, 25.0, {1: 25.0}),
        (
            DAY_S - 100,
            2 * DAY_S + 100,
            10.0,
            {day: 10.0 * s / (DAY_S + 200) for day, s in ((0, 100), (1, DAY_S), (2, 100))},
        ),
        (500.0, 500.0, 3.0, {0: 3.0}),  # an instant
    ],
)
def test_intervals_are_shared_between_patient_days(store, start_s, end_s, volume_ul, expected):
    fill(store)
    store.record_delivery(
        start_at=T0, patient_start_s=start_s, patient_end_s=end_s, steps=1, basal_ul=volume_ul
    )
    per_day = store.delivered_per_patient_day()
    assert sum(per_day.values()) == pytest.approx(volume_ul)
    assert per_day == pytest.approx(expected)
    later = {day: share for day, share in expected.items() if day >= 1}
    assert store.delivered_per_patient_day(since_day=1) == pytest.approx(later)


def test_reservoir_floors_at_zero_but_the_ledger_keeps_the_truth(store):
    fill(store, volume_ml=0.01)
    row = deliver_hour(store, 0)
    assert row["reservoir_after_ml"] == 0.0
    assert store.reservoir()["volume_ml"] == 0.0
    assert store.delivered_totals()[1] == pytest.approx(UL_PER_HOUR)


def test_running_totals_equal_the_sum_of_ledger_rows(store):
    fill(store)
    for hour in range(30):
        store.record_delivery(
            start_at=T0,
            patient_start_s=hour * 60.0,
            patient_end_s=hour * 60.0 + 59.0,
            steps=hour * 7,
            basal_ul=hour * 0.1428,
        )
    ledger = store.ledger(limit=1000)
    assert store.delivered_totals() == (
        sum(row["steps"] for row in ledger),
        pytest.approx(sum(row["volume_ul"] for row in ledger)),
    )


# ---------------------------------------------------------------------------- boluses


def test_a_bolus_cannot_go_active_twice(store):
    bolus_id = store.request_bolus("patient", 10.0, role="trainee", params={"duration_s": 600})
    assert store.bolus(bolus_id)["params"] == {"duration_s": 600}
    assert store.start_bolus(bolus_id)["state"] == BolusState.ACTIVE
    with pytest.raises(BolusStateError, match="only from pending"):
        store.start_bolus(bolus_id)
    store.finish_bolus(bolus_id)
    with pytest.raises(BolusStateError, match="is done"):
        store.start_bolus(bolus_id)
    assert [e["detail"]["change"] for e in store.events(kind="bolus")] == [
        "requested",
        "active",
        "done",
    ]


BOLUS_OPERATIONS = {
    "start": lambda store, bolus_id: store.start_bolus(bolus_id),
    "finish": lambda store, bolus_id: store.finish_bolus(bolus_id),
    "cancel": lambda store, bolus_id: store.cancel_bolus(bolus_id, reason="test"),
}
PATHS_TO_STATE = {
    BolusState.PENDING: [],
    BolusState.ACTIVE: ["start"],
    BolusState.DONE: ["start", "finish"],
    BolusState.CANCELLED: ["cancel"],
}
ALLOWED = {
    (BolusState.PENDING, "start"): BolusState.ACTIVE,
    (BolusState.PENDING, "cancel"): BolusState.CANCELLED,
    (BolusState.ACTIVE, "finish"): BolusState.DONE,
    (BolusState.ACTIVE, "cancel"): BolusState.CANCELLED,
}


@pytest.mark.parametrize("state", list(PATHS_TO_STATE))
@pytest.mark.parametrize("operation", list(BOLUS_OPERATIONS))
def test_bolus_transitions_table(store, state, operation):
    bolus_id = store.request_bolus("single", 20.0)
    for step in PATHS_TO_STATE[state]:
        BOLUS_OPERATIONS[step](store, bolus_id)
    assert store.bolus(bolus_id)["state"] == state
    expected = ALLOWED.get((state, operation))
    if expected is None:
        with pytest.raises(BolusStateError):
            BOLUS_OPERATIONS[operation](store, bolus_id)
        assert store.bolus(bolus_id)["state"] == state
    else:
        assert BOLUS_OPERATIONS[operation](store, bolus_id)["state"] == expected


def test_only_one_bolus_is_active_at_a_time(store):
    first = store.request_bolus("bridge", 30.0)
    second = store.request_bolus("patient", 10.0)
    store.start_bolus(first)
    with pytest.raises(BolusStateError, match=f"bolus {first} is already active"):
        store.start_bolus(second)
    assert store.bolus(second)["state"] == BolusState.PENDING


def test_unknown_bolus_is_refused(store):
    with pytest.raises(BolusStateError, match="unknown"):
        store.start_bolus(42)


def test_bolus_delivery_accumulates_on_the_bolus(store):
    fill(store)
    bolus_id = store.request_bolus("clinician", 10.0)
    store.start_bolus(bolus_id)
    for hour in range(4):
        deliver_hour(store, hour, bolus_ul=2.5, bolus_id=bolus_id)
    assert store.bolus(bolus_id)["delivered_ul"] == pytest.approx(10.0)
    assert store.delivered_totals()[1] == pytest.approx(4 * (UL_PER_HOUR + 2.5))


# ----------------------------------------------------------------- alarms, events, audit


def test_alarm_lifecycle(store, clock):
    low = store.raise_alarm("low_reservoir", "medium", "reservoir below 2 mL", patient_s=10.0)
    assert store.raise_alarm("low_reservoir", "medium", "again") == low  # no duplicate
    stall = store.raise_alarm("motor_stall", "high", "no flow while the motor runs")
    info = store.raise_alarm("battery", "low", "battery below 20 %")
    assert [a["code"] for a in store.active_alarms()] == ["motor_stall", "low_reservoir", "battery"]
    assert store.acknowledge_alarm(stall, role="clinician")["acknowledged_at_utc"] is not None
    silenced = store.silence_alarm(stall, 120.0, role="clinician")
    assert silenced["silenced_until_utc"] == (T0 + timedelta(seconds=120)).isoformat(
        timespec="microseconds"
    )
    clock.advance(5)
    store.clear_alarm(stall)
    assert [a["id"] for a in store.active_alarms()] == [low, info]
    with pytest.raises(AlarmStateError, match="not active"):
        store.acknowledge_alarm(stall)
    again = store.raise_alarm("motor_stall", "high", "stalled again")
    assert again != stall
    changes = [(e["detail"]["code"], e["detail"]["change"]) for e in store.events(kind="alarm")]
    assert changes == [
        ("low_reservoir", "raised"),
        ("motor_stall", "raised"),
        ("battery", "raised"),
        ("motor_stall", "acknowledged"),
        ("motor_stall", "silenced"),
        ("motor_stall", "cleared"),
        ("motor_stall", "raised"),
    ]


@pytest.mark.parametrize("priority", ["urgent", "HIGH", ""])
def test_unknown_alarm_priority_is_refused(store, priority):
    with pytest.raises(StorageError, match="CHECK"):
        store.raise_alarm("x", priority, "y")
    assert store.active_alarms() == []
    assert store.events() == []


def test_event_queries(store, clock):
    ids = []
    for index in range(6):
        clock.advance(1)
        kind = "fault" if index % 2 else "user"
        ids.append(
            store.add_event(kind, f"event {index}", role="trainee", patient_s=index * 1440.0)
        )
    assert [e["id"] for e in store.events()] == ids
    assert [e["message"] for e in store.events(kind="fault")] == ["event 1", "event 3", "event 5"]
    assert [e["id"] for e in store.events(since_id=ids[3])] == ids[4:]
    assert [e["id"] for e in store.events(limit=2)] == ids[:2]
    assert store.events()[1]["at_utc"] == "2026-01-01T08:00:02.000000+00:00"
    with pytest.raises(ValueError, match="limit"):
        store.events(limit=0)


@pytest.mark.parametrize(
    ("outcome", "accepted"), [("ok", True), ("rejected", True), ("maybe", False)]
)
def test_audit_outcomes(store, outcome, accepted):
    request = {"dose_ug_per_day": 300}
    if accepted:
        audit_id = store.add_audit(
            "program.confirm", role="clinician", request=request, outcome=outcome
        )
        entry = store.audit_log()[0]
        assert (entry["id"], entry["role"], entry["request"], entry["outcome"]) == (
            audit_id,
            "clinician",
            request,
            outcome,
        )
    else:
        with pytest.raises(StorageError, match="CHECK"):
            store.add_audit("program.confirm", role="clinician", request=request, outcome=outcome)
        assert store.audit_log() == []


# ------------------------------------------------------------------ state and recovery


def test_clean_shutdown_flag_survives_reopening(db_path):
    with RigStore.open(db_path) as store:
        assert store.was_clean_shutdown()  # fresh install
        store.mark_running()
    with RigStore.open(db_path) as store:
        assert not store.was_clean_shutdown()
        store.mark_running()
        store.mark_clean_shutdown()
    with RigStore.open(db_path) as store:
        assert store.was_clean_shutdown()


def test_service_state_round_trip(store):
    assert store.get_state("engine") is None
    assert store.run_state() is RunState.STOPPED
    store.set_state({"engine": {"phase_s": 12.5, "segment": 3}, "time_scale": 1440})
    store.set_run_state(RunState.RUNNING, role="clinician")
    assert store.get_state("engine") == {"phase_s": 12.5, "segment": 3}
    assert store.get_state("time_scale") == 1440
    assert store.run_state() is RunState.RUNNING
    with pytest.raises(ValueError):
        store.set_run_state("PAUSED")


def test_recovery_after_an_unclean_stop(db_path, clock):
    with RigStore.open(db_path, clock=clock) as store:
        store.mark_running()
        fill(store)
        program_id = store.add_program({"dose_ug_per_day": 300}, role="clinician", summary="300")
        store.set_run_state(RunState.RUNNING, role="clinician")
        active = store.request_bolus("patient", 10.0, role="trainee")
        pending = store.request_bolus("single", 50.0, role="clinician")
        store.start_bolus(active)
        for hour in range(3):
            deliver_hour(store, hour, bolus_ul=2.0, bolus_id=active)
        store.heartbeat(patient_s=3 * 3600.0)
        # No mark_clean_shutdown(): the power goes.
    with RigStore.open(db_path, clock=clock) as store:
        assert not store.was_clean_shutdown()
        report = store.recover_after_unclean_stop()
        assert report.previous_run_state is RunState.RUNNING
        assert report.active_program["id"] == program_id
        assert report.delivered_steps == 3 * STEPS_PER_HOUR
        assert report.delivered_volume_ul == pytest.approx(3 * (UL_PER_HOUR + 2.0))
        assert report.last_delivery_patient_end_s == 3 * 3600.0
        assert report.reservoir_volume_ml == pytest.approx(20.0 - 0.081)
        assert [(b["id"], b["delivered_ul"]) for b in report.interrupted_boluses] == [(active, 6.0)]
        assert [b["id"] for b in report.cancelled_boluses] == [pending]
        assert report.last_heartbeat["patient_s"] == 3 * 3600.0
        assert store.run_state() is RunState.STOPPED
        assert store.events(kind="recovery")[0]["id"] == report.event_id
        for bolus_id in (active, pending):
            with pytest.raises(BolusStateError):
                store.start_bolus(bolus_id)
        with pytest.raises(BolusStateError):
            deliver_hour(store, 3, bolus_ul=2.0, bolus_id=active)
        store.mark_running()
    with RigStore.open(db_path) as store:
        assert store.bolus(active)["state"] == BolusState.INTERRUPTED


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from rig.service.books import RigStore

    store = RigStore.open(sys.argv[1])
    store.mark_running()
    store.fill_reservoir(drug="baclofen", concentration_ug_per_ml=500.0, volume_ml=20.0,
                         capacity_ml=20.0, low_threshold_ml=2.0)
    bolus_id = store.request_bolus("clinician", 1_000_000.0)
    store.start_bolus(bolus_id)
    for n in range(1_000_000):
        row = store.record_delivery(start_at=datetime.now(UTC), patient_start_s=n * 1.0,
                                    patient_end_s=n + 1.0, steps=1, basal_ul=0.0204,
                                    bolus_ul=0.01, bolus_id=bolus_id)
        print(row["id"], flush=True)
    """
)


def test_kill_9_mid_delivery_leaves_consistent_books(db_path):
    db_path.parent.mkdir(parents=True)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    committed = [int(child.stdout.readline()) for _ in range(50)]
    child.kill()
    child.wait()
    with RigStore.open(db_path) as store:
        assert not store.was_clean_shutdown()
        ledger = store.ledger(limit=10_000)
        assert len(ledger) >= committed[-1]
        report = store.recover_after_unclean_stop()
        assert report.delivered_steps == len(ledger)
        assert report.delivered_volume_ul == pytest.approx(sum(r["volume_ul"] for r in ledger))
        assert report.reservoir_volume_ml == ledger[-1]["reservoir_after_ml"]
        (bolus,) = report.interrupted_boluses
        assert bolus["delivered_ul"] == pytest.approx(0.01 * len(ledger))


# --------------------------------------------------------------------------- threads


def test_concurrent_writers_from_threads(store):
    fill(store)
    threads_n, writes_n = 8, 40
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def writer(index: int) -> None:
        try:
            start.wait()
            for n in range(writes_n):
                store.record_delivery(
                    start_at=T0,
                    patient_start_s=float(index * writes_n + n),
                    patient_end_s=float(index * writes_n + n + 1),
                    steps=3,
                    basal_ul=0.5,
                )
                store.add_event("thread", f"{index}/{n}")
                store.set_state({f"thread-{index}": n})
                store.active_alarms()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    total = threads_n * writes_n
    assert store.delivered_totals() == (3 * total, pytest.approx(0.5 * total))
    assert store.reservoir()["volume_ml"] == pytest.approx(20.0 - 0.5 * total / 1000)
    assert len(store.events(kind="thread", limit=10_000)) == total
    assert all(store.get_state(f"thread-{i}") == writes_n - 1 for i in range(threads_n))


# ---------------------------------------------------------------------- PINs, timing


def test_pin_hashes_persist(db_path):
    with RigStore.open(db_path) as store:
        assert store.load_pin_hash("clinician") is None
        store.save_pin_hash("clinician", "scrypt:n=2,r=1,p=1", b"salt", b"digest")
    with RigStore.open(db_path) as store:
        assert store.load_pin_hash("clinician") == ("scrypt:n=2,r=1,p=1", b"salt", b"digest")


def test_ledger_commit_latency_allows_one_write_per_second(store):
    fill(store)
    latencies_s = []
    for n in range(300):
        began = time.perf_counter()
        store.record_delivery(
            start_at=T0,
            patient_start_s=n * 1440.0,
            patient_end_s=(n + 1) * 1440.0,
            steps=490,
            basal_ul=10.0,
        )
        latencies_s.append(time.perf_counter() - began)
    p99_s = statistics.quantiles(latencies_s, n=100)[98]
    p50_s = statistics.median(latencies_s)
    print(f"ledger commit: p50 {p50_s * 1e3:.2f} ms, p99 {p99_s * 1e3:.2f} ms")
    assert p99_s < 0.25  # a quarter of the 1 s commit period
