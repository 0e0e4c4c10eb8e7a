"""The rig's books: programs, events, audit, alarms, delivery ledger, reservoir, boluses, state.

One SQLite file through sqlite-utils, in WAL mode with ``synchronous=FULL`` so that a committed
write survives a power cut. Every write that touches more than one row runs inside
``db.atomic()``: in sqlite-utils 4.x ``with db.conn:`` is not a transaction, because each
``db.execute()`` outside ``atomic()`` commits on its own.

Threads: one connection (``check_same_thread=False``) guarded by a re-entrant lock. Every public
method holds the lock for the whole of its transaction, so the delivery thread and the API thread
can share one store. SQLite serialises writers anyway, and a single connection stops two threads
from interleaving statements inside each other's transactions.

Timestamps: wall-clock columns end in ``_utc`` (ISO 8601 text, UTC, fixed width so text order is
time order); patient-time columns end in ``_s`` (seconds of patient time, i.e. bench time
multiplied by the time-compression factor). Volumes say their unit: ``_ul``, ``_ml``.

The store logs an event, in the same transaction, for every change of the state it keeps
(programs, alarms, boluses, reservoir, run state, PINs, recovery). Ledger rows and housekeeping
(heartbeat, engine state) are not events. Other user actions and faults are logged by the caller
with :meth:`RigStore.add_event`; state-changing API calls go to :meth:`RigStore.add_audit`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlite_utils

SECONDS_PER_PATIENT_DAY = 86_400.0
BOLUS_KINDS = ("patient", "single", "priming", "bridge", "clinician")
ALARM_PRIORITIES = ("high", "medium", "low")  # highest first
AUDIT_OUTCOMES = ("ok", "rejected")
MAX_QUERY_ROWS = 10_000

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The bench's wall clock, in UTC."""
    return datetime.now(UTC)


def iso_utc(moment: datetime) -> str:
    """Fixed-width ISO 8601 text in UTC (microseconds always present), so text order is time
    order."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class StorageError(RuntimeError):
    """The books could not be read or written; nothing from the failed operation was stored.

    ``kind`` is one of ``full``, ``readonly``, ``corrupt``, ``cantopen``, ``io``, ``busy``,
    ``constraint``, ``schema`` or ``other``; ``sqlite_error`` is SQLite's error name, if any.
    """

    def __init__(self, message: str, *, kind: str, sqlite_error: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.sqlite_error = sqlite_error


class StateError(Exception):
    """The books' current state does not allow this change; nothing was written."""


class BolusStateError(StateError):
    """A bolus transition that its current state forbids (e.g. starting it a second time)."""


class AlarmStateError(StateError):
    """An alarm operation on an alarm that is unknown or already cleared."""


class BolusState(StrEnum):
    """Life of a bolus: pending → active → done; pending/active → cancelled; after a power
    loss, active → interrupted. Done, cancelled and interrupted are final: nothing resumes."""

    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


class RunState(StrEnum):
    """Whether the pump is delivering its program."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


class EventKind(StrEnum):
    """Event kinds the store writes itself; callers may log any other kind (e.g. ``fault``)."""

    PROGRAM = "program"
    ALARM = "alarm"
    BOLUS = "bolus"
    RESERVOIR = "reservoir"
    RUN = "run"
    SERVICE = "service"
    RECOVERY = "recovery"
    PIN = "pin"


# SQLite's primary error name → (StorageError.kind, what it means for the operator).
_SQLITE_ERRORS: dict[str, tuple[str, str]] = {
    "SQLITE_FULL": ("full", "the disk (or the database's size limit) is full"),
    "SQLITE_READONLY": ("readonly", "the database is read-only"),
    "SQLITE_CORRUPT": ("corrupt", "the database file is corrupt"),
    "SQLITE_NOTADB": ("corrupt", "the file is not a SQLite database (corrupt?)"),
    "SQLITE_CANTOPEN": ("cantopen", "the database file cannot be opened"),
    "SQLITE_IOERR": ("io", "a disk I/O error occurred"),
    "SQLITE_BUSY": ("busy", "the database is locked by another process"),
    "SQLITE_LOCKED": ("busy", "the database table is locked"),
    "SQLITE_CONSTRAINT": ("constraint", "the write breaks a rule of the books"),
}

_APPEND_ONLY_TABLES = ("programs", "events", "audit", "ledger")

_MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "initial books",
        (
            """CREATE TABLE programs (
                id INTEGER PRIMARY KEY,
                confirmed_at_utc TEXT NOT NULL,
                patient_s REAL CHECK (patient_s >= 0),
                role TEXT NOT NULL,
                program_json TEXT NOT NULL CHECK (json_valid(program_json)),
                summary TEXT NOT NULL
            ) STRICT""",
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                at_utc TEXT NOT NULL,
                patient_s REAL CHECK (patient_s >= 0),
                kind TEXT NOT NULL,
                role TEXT,
                message TEXT NOT NULL,
                detail_json TEXT CHECK (detail_json IS NULL OR json_valid(detail_json))
            ) STRICT""",
            "CREATE INDEX events_by_kind ON events (kind, id)",
            f"""CREATE TABLE audit (
                id INTEGER PRIMARY KEY,
                at_utc TEXT NOT NULL,
                role TEXT,
                action TEXT NOT NULL,
                request_json TEXT NOT NULL CHECK (json_valid(request_json)),
                outcome TEXT NOT NULL CHECK (outcome IN {AUDIT_OUTCOMES!r}),
                detail TEXT NOT NULL DEFAULT ''
            ) STRICT""",
            f"""CREATE TABLE alarms (
                id INTEGER PRIMARY KEY,
                code TEXT NOT NULL,
                priority TEXT NOT NULL CHECK (priority IN {ALARM_PRIORITIES!r}),
                raised_at_utc TEXT NOT NULL,
                patient_s REAL CHECK (patient_s >= 0),
                message TEXT NOT NULL,
                acknowledged_at_utc TEXT,
                silenced_until_utc TEXT,
                cleared_at_utc TEXT
            ) STRICT""",
            "CREATE UNIQUE INDEX alarms_one_active_per_code ON alarms (code)"
            " WHERE cleared_at_utc IS NULL",
            f"""CREATE TABLE boluses (
                id INTEGER PRIMARY KEY,
                kind TEXT NOT NULL CHECK (kind IN {BOLUS_KINDS!r}),
                state TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN {tuple(str(state) for state in BolusState)!r}),
                requested_at_utc TEXT NOT NULL,
                patient_requested_s REAL CHECK (patient_requested_s >= 0),
                role TEXT,
                volume_ul REAL NOT NULL CHECK (volume_ul > 0),
                delivered_ul REAL NOT NULL DEFAULT 0 CHECK (delivered_ul >= 0),
                params_json TEXT CHECK (params_json IS NULL OR json_valid(params_json)),
                started_at_utc TEXT,
                ended_at_utc TEXT
            ) STRICT""",
            "CREATE UNIQUE INDEX boluses_one_active ON boluses (state) WHERE state = 'active'",
            """CREATE TABLE ledger (
                id INTEGER PRIMARY KEY,
                start_at_utc TEXT NOT NULL,
                end_at_utc TEXT NOT NULL,
                patient_start_s REAL NOT NULL CHECK (patient_start_s >= 0),
                patient_end_s REAL NOT NULL CHECK (patient_end_s >= patient_start_s),
                steps INTEGER NOT NULL CHECK (steps >= 0),
                volume_ul REAL NOT NULL CHECK (volume_ul >= 0),
                basal_ul REAL NOT NULL CHECK (basal_ul >= 0),
                bolus_ul REAL NOT NULL CHECK (bolus_ul >= 0),
                bolus_id INTEGER REFERENCES boluses (id),
                reservoir_after_ml REAL NOT NULL CHECK (reservoir_after_ml >= 0),
                CHECK (bolus_ul = 0 OR bolus_id IS NOT NULL)
            ) STRICT""",
            "CREATE INDEX ledger_by_patient_start ON ledger (patient_start_s)",
            """CREATE TABLE ledger_totals (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                intervals INTEGER NOT NULL,
                steps INTEGER NOT NULL,
                volume_ul REAL NOT NULL,
                last_patient_end_s REAL,
                last_end_at_utc TEXT
            ) STRICT""",
            "INSERT INTO ledger_totals (id, intervals, steps, volume_ul) VALUES (1, 0, 0, 0.0)",
            """CREATE TABLE reservoir (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                drug TEXT NOT NULL,
                concentration_ug_per_ml REAL NOT NULL CHECK (concentration_ug_per_ml > 0),
                volume_ml REAL NOT NULL CHECK (volume_ml >= 0),
                capacity_ml REAL NOT NULL CHECK (capacity_ml > 0),
                low_threshold_ml REAL NOT NULL CHECK (low_threshold_ml >= 0),
                updated_at_utc TEXT NOT NULL,
                last_refill_at_utc TEXT,
                CHECK (volume_ml <= capacity_ml),
                CHECK (low_threshold_ml <= capacity_ml)
            ) STRICT""",
            """CREATE TABLE service_state (
                key TEXT PRIMARY KEY,
                value_json TEXT NOT NULL CHECK (json_valid(value_json)),
                updated_at_utc TEXT NOT NULL
            ) STRICT""",
            """CREATE TABLE pins (
                role TEXT PRIMARY KEY,
                scheme TEXT NOT NULL,
                salt BLOB NOT NULL,
                digest BLOB NOT NULL,
                updated_at_utc TEXT NOT NULL
            ) STRICT""",
            *(
                f"""CREATE TRIGGER {table}_append_only_{verb.lower()} BEFORE {verb} ON {table}
                BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"""
                for table in _APPEND_ONLY_TABLES
                for verb in ("UPDATE", "DELETE")
            ),
        ),
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


@dataclass(frozen=True)
class RecoveryReport:
    """What the books say after a stop that was not clean (power cut, kill -9)."""

    previous_run_state: RunState
    active_program: dict[str, Any] | None
    delivered_steps: int
    delivered_volume_ul: float
    last_delivery_patient_end_s: float | None
    reservoir_volume_ml: float | None
    interrupted_boluses: tuple[dict[str, Any], ...]
    cancelled_boluses: tuple[dict[str, Any], ...]
    last_heartbeat: Any
    event_id: int


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as a dict; ``x_json`` columns become ``x`` holding the decoded value."""
    decoded: dict[str, Any] = {}
    for column, value in row.items():
        if column.endswith("_json"):
            decoded[column.removesuffix("_json")] = None if value is None else json.loads(value)
        else:
            decoded[column] = value
    return decoded


def _storage_error(error: sqlite3.Error, operation: str, path: Path) -> StorageError:
    name = getattr(error, "sqlite_errorname", None)
    primary = "_".join(name.split("_")[:2]) if name else ""
    kind, meaning = _SQLITE_ERRORS.get(primary, ("other", "SQLite reported an error"))
    return StorageError(
        f"cannot {operation}: {meaning} ({error}); nothing from this operation was stored"
        f" [database {path}]",
        kind=kind,
        sqlite_error=name,
    )


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_QUERY_ROWS:
        raise ValueError(f"limit must be between 1 and {MAX_QUERY_ROWS}, got {limit}")
    return limit


class RigStore:
    """The rig's books in one SQLite file. Open with :meth:`RigStore.open`."""

    def __init__(self, db: sqlite_utils.Database, path: Path, clock: Clock) -> None:
        self._db = db
        self._path = path
        self._clock = clock
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- opening and plumbing

    @classmethod
    def open(
        cls, path: Path | str, *, clock: Clock = utc_now, busy_timeout_s: float = 5.0
    ) -> RigStore:
        """Open (creating directory and file if needed) and migrate the books at *path*."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot create the data directory {path.parent}: {error.strerror}",
                kind="cantopen",
            ) from error
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout_s)
            db = sqlite_utils.Database(conn)
            db.enable_wal()
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path, clock)
            if store.storage_settings()["journal_mode"] != "wal":
                raise StorageError(
                    f"cannot open the books: WAL mode refused by the filesystem [database {path}]",
                    kind="other",
                )
            store._migrate()
        except BaseException as error:
            if conn is not None:
                conn.close()
            if isinstance(error, sqlite3.Error):
                raise _storage_error(error, "open the books", path) from error
            raise
        return store

    def close(self) -> None:
        """Close the connection (every committed write is already on disk)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> RigStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def storage_settings(self) -> dict[str, Any]:
        """Journal mode, synchronous level (2 = FULL), foreign keys, schema version: for the
        power-on self test."""
        with self._read("read the storage settings") as db:
            has_versions = db["schema_version"].exists()
            version = (
                db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
                if has_versions
                else None
            )
            return {
                "journal_mode": db.journal_mode,
                "synchronous": db.execute("PRAGMA synchronous").fetchone()[0],
                "foreign_keys": bool(db.execute("PRAGMA foreign_keys").fetchone()[0]),
                "schema_version": version,
            }

    @contextmanager
    def _write(self, operation: str) -> Iterator[sqlite_utils.Database]:
        """One transaction under the lock; any SQLite error becomes :class:`StorageError`."""
        with self._lock:
            try:
                with self._db.atomic():
                    yield self._db
            except sqlite3.Error as error:
                raise _storage_error(error, operation, self._path) from error

    @contextmanager
    def _read(self, operation: str) -> Iterator[sqlite_utils.Database]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as error:
                raise _storage_error(error, operation, self._path) from error

    def _now(self) -> str:
        return iso_utc(self._clock())

    def _migrate(self) -> None:
        """Apply every pending migration, in order, in one transaction."""
        with self._write("migrate the books") as db:
            db.execute(
                """CREATE TABLE IF NOT EXISTS schema_version (
                    version INTEGER PRIMARY KEY,
                    description TEXT NOT NULL,
                    applied_at_utc TEXT NOT NULL
                ) STRICT"""
            )
            current = db.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            current_version = current.fetchone()[0]
            if current_version > SCHEMA_VERSION:
                raise StorageError(
                    f"cannot open the books: schema version {current_version} was written by a"
                    f" newer rig (this one knows up to {SCHEMA_VERSION}) [database {self._path}]",
                    kind="schema",
                )
            for version, description, statements in _MIGRATIONS:
                if version <= current_version:
                    continue
                for statement in statements:
                    db.execute(statement)
                db["schema_version"].insert(
                    {"version": version, "description": description, "applied_at_utc": self._now()}
                )

    def _log(
        self,
        db: sqlite_utils.Database,
        kind: str,
        message: str,
        *,
        role: str | None = None,
        patient_s: float | None = None,
        detail: Any = None,
    ) -> int:
        """Append an event inside the caller's open transaction."""
        row = {
            "at_utc": self._now(),
            "patient_s": patient_s,
            "kind": str(kind),
            "role": role,
            "message": message,
            "detail_json": None if detail is None else _dumps(detail),
        }
        return db["events"].insert(row).last_pk

    def _one(self, db: sqlite_utils.Database, sql: str, params: Sequence[Any] = ()) -> dict | None:
        rows = list(db.query(sql, params))
        return _decode(rows[0]) if rows else None

    def _all(self, db: sqlite_utils.Database, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        return [_decode(row) for row in db.query(sql, params)]

    # -------------------------------------------------------------------------- programs

    def add_program(
        self,
        program: Mapping[str, Any],
        *,
        role: str,
        summary: str,
        patient_s: float | None = None,
    ) -> int:
        """Keep a newly confirmed program version (it becomes the active one); return its id."""
        with self._write("record the confirmed program") as db:
            row = {
                "confirmed_at_utc": self._now(),
                "patient_s": patient_s,
                "role": role,
                "program_json": _dumps(program),
                "summary": summary,
            }
            program_id = db["programs"].insert(row).last_pk
            self._log(
                db,
                EventKind.PROGRAM,
                f"program version {program_id} confirmed: {summary}",
                role=role,
                patient_s=patient_s,
                detail={"program_id": program_id},
            )
        return program_id

    def active_program(self) -> dict[str, Any] | None:
        """The most recently confirmed program version (``program`` holds the decoded JSON)."""
        with self._read("read the active program") as db:
            return self._one(db, "SELECT * FROM programs ORDER BY id DESC LIMIT 1")

    def program_history(self) -> list[dict[str, Any]]:
        """Every confirmed program version, oldest first."""
        with self._read("read the program history") as db:
            return self._all(db, "SELECT * FROM programs ORDER BY id")

    # ---------------------------------------------------------------------- events, audit

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        role: str | None = None,
        patient_s: float | None = None,
        detail: Any = None,
    ) -> int:
        """Append a user action, alarm or fault to the event log; return its id."""
        with self._write("log the event") as db:
            return self._log(db, kind, message, role=role, patient_s=patient_s, detail=detail)

    def events(
        self, since_id: int | None = None, kind: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Events after *since_id* (oldest first), optionally of one *kind*."""
        with self._read("read the event log") as db:
            return self._all(
                db,
                "SELECT * FROM events WHERE id > ? AND (? IS NULL OR kind = ?) ORDER BY id LIMIT ?",
                (since_id or 0, kind, kind, _limit(limit)),
            )

    def add_audit(
        self,
        action: str,
        *,
        role: str | None,
        request: Any,
        outcome: str,
        detail: str = "",
    ) -> int:
        """Record a state-changing API call, accepted (``ok``) or ``rejected``; return its id."""
        row = {
            "at_utc": self._now(),
            "role": role,
            "action": action,
            "request_json": _dumps(request),
            "outcome": outcome,
            "detail": detail,
        }
        with self._write("record the audit entry") as db:
            return db["audit"].insert(row).last_pk

    def audit_log(self, since_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries after *since_id*, oldest first."""
        with self._read("read the audit log") as db:
            return self._all(
                db,
                "SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?",
                (since_id or 0, _limit(limit)),
            )

    # ----------------------------------------------------------------------------- alarms

    def raise_alarm(
        self, code: str, priority: str, message: str, *, patient_s: float | None = None
    ) -> int:
        """Raise alarm *code* (``high``/``medium``/``low``); if it is already active (not
        cleared), return the existing alarm's id and change nothing."""
        with self._write("raise the alarm") as db:
            existing = self._one(
                db, "SELECT id FROM alarms WHERE code = ? AND cleared_at_utc IS NULL", (code,)
            )
            if existing is not None:
                return existing["id"]
            row = {
                "code": code,
                "priority": str(priority),
                "raised_at_utc": self._now(),
                "patient_s": patient_s,
                "message": message,
            }
            alarm_id = db["alarms"].insert(row).last_pk
            self._log(
                db,
                EventKind.ALARM,
                f"{priority} alarm raised: {code}: {message}",
                patient_s=patient_s,
                detail={"alarm_id": alarm_id, "code": code, "change": "raised"},
            )
        return alarm_id

    def _change_alarm(
        self,
        alarm_id: int,
        assignments: str,
        params: Sequence[Any],
        change: str,
        *,
        role: str | None,
        patient_s: float | None,
    ) -> dict[str, Any]:
        with self._write(f"record the alarm {change}") as db:
            cursor = db.execute(
                f"UPDATE alarms SET {assignments} WHERE id = ? AND cleared_at_utc IS NULL",
                (*params, alarm_id),
            )
            if cursor.rowcount != 1:
                raise AlarmStateError(f"alarm {alarm_id} is not active (unknown or cleared)")
            alarm = self._one(db, "SELECT * FROM alarms WHERE id = ?", (alarm_id,))
            assert alarm is not None
            self._log(
                db,
                EventKind.ALARM,
                f"alarm {change}: {alarm['code']}",
                role=role,
                patient_s=patient_s,
                detail={"alarm_id": alarm_id, "code": alarm["code"], "change": change},
            )
            return alarm

    def acknowledge_alarm(
        self, alarm_id: int, *, role: str | None = None, patient_s: float | None = None
    ) -> dict[str, Any]:
        """Mark an active alarm acknowledged (the first acknowledgement time is kept)."""
        return self._change_alarm(
            alarm_id,
            "acknowledged_at_utc = coalesce(acknowledged_at_utc, ?)",
            (self._now(),),
            "acknowledged",
            role=role,
            patient_s=patient_s,
        )

    def silence_alarm(
        self,
        alarm_id: int,
        duration_s: float,
        *,
        role: str | None = None,
        patient_s: float | None = None,
    ) -> dict[str, Any]:
        """Silence an active alarm for *duration_s* wall-clock seconds (the alarm manager
        enforces the maximum)."""
        if not duration_s > 0:
            raise ValueError(f"silence duration must be positive, got {duration_s} s")
        until = iso_utc(self._clock() + timedelta(seconds=duration_s))
        return self._change_alarm(
            alarm_id, "silenced_until_utc = ?", (until,), "silenced", role=role, patient_s=patient_s
        )

    def clear_alarm(
        self, alarm_id: int, *, role: str | None = None, patient_s: float | None = None
    ) -> dict[str, Any]:
        """Clear an active alarm (its condition has gone); it stays in the history."""
        return self._change_alarm(
            alarm_id,
            "cleared_at_utc = ?",
            (self._now(),),
            "cleared",
            role=role,
            patient_s=patient_s,
        )

    def active_alarms(self) -> list[dict[str, Any]]:
        """Alarms not yet cleared, highest priority first, then oldest first."""
        order = " ".join(f"WHEN '{p}' THEN {rank}" for rank, p in enumerate(ALARM_PRIORITIES))
        with self._read("read the active alarms") as db:
            return self._all(
                db,
                "SELECT * FROM alarms WHERE cleared_at_utc IS NULL"
                f" ORDER BY CASE priority {order} END, raised_at_utc, id",
            )

    def alarm_history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent alarms, cleared or not, newest first."""
        with self._read("read the alarm history") as db:
            return self._all(db, "SELECT * FROM alarms ORDER BY id DESC LIMIT ?", (_limit(limit),))

    # --------------------------------------------------------------------------- reservoir

    def fill_reservoir(
        self,
        *,
        drug: str,
        concentration_ug_per_ml: float,
        volume_ml: float,
        capacity_ml: float,
        low_threshold_ml: float,
        role: str | None = None,
        patient_s: float | None = None,
    ) -> dict[str, Any]:
        """Record a fill or refill: the reservoir's new contents, alarm threshold and date."""
        now = self._now()
        row = {
            "id": 1,
            "drug": drug,
            "concentration_ug_per_ml": concentration_ug_per_ml,
            "volume_ml": volume_ml,
            "capacity_ml": capacity_ml,
            "low_threshold_ml": low_threshold_ml,
            "updated_at_utc": now,
            "last_refill_at_utc": now,
        }
        with self._write("record the reservoir fill") as db:
            db["reservoir"].upsert(row, pk="id")
            self._log(
                db,
                EventKind.RESERVOIR,
                f"reservoir filled: {volume_ml} mL of {drug} at {concentration_ug_per_ml} µg/mL"
                f" (capacity {capacity_ml} mL, low alarm at {low_threshold_ml} mL)",
                role=role,
                patient_s=patient_s,
                detail=row,
            )
            reservoir = self._one(db, "SELECT * FROM reservoir WHERE id = 1")
            assert reservoir is not None
            return reservoir

    def reservoir(self) -> dict[str, Any] | None:
        """The reservoir per the books, or None before the first fill."""
        with self._read("read the reservoir") as db:
            return self._one(db, "SELECT * FROM reservoir WHERE id = 1")

    # ------------------------------------------------------------------------------ ledger

    def record_delivery(
        self,
        *,
        start_at: datetime,
        patient_start_s: float,
        patient_end_s: float,
        steps: int,
        basal_ul: float,
        bolus_ul: float = 0.0,
        bolus_id: int | None = None,
        end_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Commit one delivered interval: append the ledger row, take its volume out of the
        reservoir (floored at 0 mL), add it to the running totals and, for a bolus, to the
        active bolus's delivered volume, all in one transaction. Returns the ledger row."""
        volume_ul = basal_ul + bolus_ul
        end_at_utc = iso_utc(end_at) if end_at is not None else self._now()
        with self._write("record the delivered interval") as db:
            reservoir = self._one(db, "SELECT volume_ml FROM reservoir WHERE id = 1")
            if reservoir is None:
                raise StateError("no reservoir in the books: fill the reservoir before delivering")
            reservoir_after_ml = max(0.0, reservoir["volume_ml"] - volume_ul / 1000.0)
            ledger_id = (
                db["ledger"]
                .insert(
                    {
                        "start_at_utc": iso_utc(start_at),
                        "end_at_utc": end_at_utc,
                        "patient_start_s": patient_start_s,
                        "patient_end_s": patient_end_s,
                        "steps": steps,
                        "volume_ul": volume_ul,
                        "basal_ul": basal_ul,
                        "bolus_ul": bolus_ul,
                        "bolus_id": bolus_id,
                        "reservoir_after_ml": reservoir_after_ml,
                    }
                )
                .last_pk
            )
            db.execute(
                "UPDATE reservoir SET volume_ml = ?, updated_at_utc = ? WHERE id = 1",
                (reservoir_after_ml, end_at_utc),
            )
            db.execute(
                """UPDATE ledger_totals SET intervals = intervals + 1, steps = steps + ?,
                volume_ul = volume_ul + ?, last_patient_end_s = ?, last_end_at_utc = ?
                WHERE id = 1""",
                (steps, volume_ul, patient_end_s, end_at_utc),
            )
            if bolus_id is not None:
                cursor = db.execute(
                    "UPDATE boluses SET delivered_ul = delivered_ul + ? WHERE id = ? AND state = ?",
                    (bolus_ul, bolus_id, BolusState.ACTIVE),
                )
                if cursor.rowcount != 1:
                    raise BolusStateError(
                        f"bolus {bolus_id} is not active: delivery cannot be booked against it"
                    )
            ledger_row = self._one(db, "SELECT * FROM ledger WHERE id = ?", (ledger_id,))
            assert ledger_row is not None
            return ledger_row

    def delivered_totals(self) -> tuple[int, float]:
        """All delivery ever booked: (steps, volume_ul)."""
        with self._read("read the delivered totals") as db:
            row = db.execute("SELECT steps, volume_ul FROM ledger_totals WHERE id = 1").fetchone()
            return int(row[0]), float(row[1])

    def ledger(self, since_id: int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Ledger rows after *since_id*, oldest first."""
        with self._read("read the ledger") as db:
            return self._all(
                db,
                "SELECT * FROM ledger WHERE id > ? ORDER BY id LIMIT ?",
                (since_id or 0, _limit(limit)),
            )

    def delivered_per_patient_day(self, since_day: int = 0) -> dict[int, float]:
        """Volume delivered (µL) per patient day (day *n* covers patient seconds
        [86400·n, 86400·(n+1))). An interval that crosses midnight is shared between the days
        in proportion to its time in each."""
        day_s = SECONDS_PER_PATIENT_DAY
        totals: dict[int, float] = {}
        with self._read("read the delivery per patient day") as db:
            within_one_day = db.execute(
                """SELECT CAST(patient_start_s / ? AS INTEGER) AS day, sum(volume_ul)
                FROM ledger WHERE patient_start_s >= ?
                AND CAST(patient_start_s / ? AS INTEGER) = CAST(patient_end_s / ? AS INTEGER)
                GROUP BY day""",
                (day_s, since_day * day_s, day_s, day_s),
            ).fetchall()
            crossing = db.execute(
                """SELECT patient_start_s, patient_end_s, volume_ul FROM ledger
                WHERE patient_end_s > ?
                AND CAST(patient_start_s / ? AS INTEGER) != CAST(patient_end_s / ? AS INTEGER)""",
                (since_day * day_s, day_s, day_s),
            ).fetchall()
        for day, volume_ul in within_one_day:
            totals[day] = totals.get(day, 0.0) + volume_ul
        for start_s, end_s, volume_ul in crossing:
            for day in range(int(start_s // day_s), int(end_s // day_s) + 1):
                overlap_s = min(end_s, (day + 1) * day_s) - max(start_s, day * day_s)
                if overlap_s > 0 and day >= since_day:
                    totals[day] = totals.get(day, 0.0) + volume_ul * overlap_s / (end_s - start_s)
        return dict(sorted(totals.items()))

    # ----------------------------------------------------------------------------- boluses

    def request_bolus(
        self,
        kind: str,
        volume_ul: float,
        *,
        role: str | None = None,
        patient_s: float | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> int:
        """Book a bolus request (state ``pending``); return its id."""
        row = {
            "kind": str(kind),
            "state": BolusState.PENDING.value,
            "requested_at_utc": self._now(),
            "patient_requested_s": patient_s,
            "role": role,
            "volume_ul": volume_ul,
            "params_json": None if params is None else _dumps(params),
        }
        with self._write("record the bolus request") as db:
            bolus_id = db["boluses"].insert(row).last_pk
            self._log(
                db,
                EventKind.BOLUS,
                f"{kind} bolus of {volume_ul} µL requested",
                role=role,
                patient_s=patient_s,
                detail={"bolus_id": bolus_id, "change": "requested"},
            )
        return bolus_id

    def _transition_bolus(
        self,
        db: sqlite_utils.Database,
        bolus_id: int,
        allowed_from: tuple[BolusState, ...],
        to: BolusState,
        *,
        role: str | None = None,
        patient_s: float | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """Move a bolus to *to* only from *allowed_from* (a guarded UPDATE, inside the caller's
        transaction), stamp the time and log the event."""
        stamp_column = "started_at_utc" if to is BolusState.ACTIVE else "ended_at_utc"
        placeholders = ", ".join("?" for _ in allowed_from)
        cursor = db.execute(
            f"UPDATE boluses SET state = ?, {stamp_column} = ?"
            f" WHERE id = ? AND state IN ({placeholders})",
            (to.value, self._now(), bolus_id, *(state.value for state in allowed_from)),
        )
        if cursor.rowcount != 1:
            current = self._one(db, "SELECT state FROM boluses WHERE id = ?", (bolus_id,))
            now_state = "unknown" if current is None else current["state"]
            allowed = " or ".join(state.value for state in allowed_from)
            raise BolusStateError(
                f"bolus {bolus_id} is {now_state}: it can become {to.value} only from {allowed}"
            )
        bolus = self._one(db, "SELECT * FROM boluses WHERE id = ?", (bolus_id,))
        assert bolus is not None
        suffix = f" ({reason})" if reason else ""
        self._log(
            db,
            EventKind.BOLUS,
            f"{bolus['kind']} bolus {bolus_id} {to.value}: {bolus['delivered_ul']:.3f} of"
            f" {bolus['volume_ul']:.3f} µL delivered{suffix}",
            role=role,
            patient_s=patient_s,
            detail={"bolus_id": bolus_id, "change": to.value},
        )
        return bolus

    def start_bolus(
        self, bolus_id: int, *, role: str | None = None, patient_s: float | None = None
    ) -> dict[str, Any]:
        """pending → active. Refused if the bolus is in any other state or if another bolus
        is active, so no bolus is ever delivered twice."""
        with self._write("start the bolus") as db:
            active = self._one(db, "SELECT id FROM boluses WHERE state = 'active'")
            if active is not None and active["id"] != bolus_id:
                raise BolusStateError(f"bolus {active['id']} is already active")
            return self._transition_bolus(
                db,
                bolus_id,
                (BolusState.PENDING,),
                BolusState.ACTIVE,
                role=role,
                patient_s=patient_s,
            )

    def finish_bolus(self, bolus_id: int, *, patient_s: float | None = None) -> dict[str, Any]:
        """active → done (book its last interval first)."""
        with self._write("finish the bolus") as db:
            return self._transition_bolus(
                db, bolus_id, (BolusState.ACTIVE,), BolusState.DONE, patient_s=patient_s
            )

    def cancel_bolus(
        self,
        bolus_id: int,
        *,
        role: str | None = None,
        patient_s: float | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """pending or active → cancelled (by a user, or by a fault)."""
        with self._write("cancel the bolus") as db:
            return self._transition_bolus(
                db,
                bolus_id,
                (BolusState.PENDING, BolusState.ACTIVE),
                BolusState.CANCELLED,
                role=role,
                patient_s=patient_s,
                reason=reason,
            )

    def bolus(self, bolus_id: int) -> dict[str, Any] | None:
        """One bolus (``params`` decoded), or None."""
        with self._read("read the bolus") as db:
            return self._one(db, "SELECT * FROM boluses WHERE id = ?", (bolus_id,))

    def boluses(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Boluses, newest first, optionally only those in *state*."""
        with self._read("read the boluses") as db:
            return self._all(
                db,
                "SELECT * FROM boluses WHERE (? IS NULL OR state = ?) ORDER BY id DESC LIMIT ?",
                (state, state, _limit(limit)),
            )

    # ----------------------------------------------------------------------- service state

    def get_state(self, key: str, default: Any = None) -> Any:
        """A service-state value (decoded JSON), or *default*."""
        with self._read("read the service state") as db:
            return self._state_value(db, key, default)

    def set_state(self, values: Mapping[str, Any]) -> None:
        """Set several service-state keys in one transaction (e.g. the engine state blob)."""
        with self._write("save the service state") as db:
            self._set_state(db, values)

    def _set_state(self, db: sqlite_utils.Database, values: Mapping[str, Any]) -> None:
        now = self._now()
        rows = [
            {"key": key, "value_json": _dumps(value), "updated_at_utc": now}
            for key, value in values.items()
        ]
        db["service_state"].upsert_all(rows, pk="key")

    def run_state(self) -> RunState:
        """RUNNING or STOPPED per the books (STOPPED on a fresh install)."""
        return RunState(self.get_state("run_state", RunState.STOPPED.value))

    def set_run_state(
        self, state: RunState | str, *, role: str | None = None, patient_s: float | None = None
    ) -> None:
        """Record that delivery started or stopped."""
        run_state = RunState(state)
        with self._write("record the run state") as db:
            self._set_state(db, {"run_state": run_state.value})
            self._log(
                db, EventKind.RUN, f"delivery {run_state.value}", role=role, patient_s=patient_s
            )

    def heartbeat(self, patient_s: float | None = None) -> None:
        """Note that the service is alive (for the recovery report)."""
        self.set_state({"last_heartbeat": {"at_utc": self._now(), "patient_s": patient_s}})

    def mark_running(self) -> None:
        """The service has started: until :meth:`mark_clean_shutdown`, a stop is unclean."""
        with self._write("mark the service running") as db:
            self._set_state(db, {"clean_shutdown": False, "service_started_at_utc": self._now()})
            self._log(db, EventKind.SERVICE, "service started")

    def mark_clean_shutdown(self) -> None:
        """The service is stopping in order (delivery already stopped, books complete)."""
        with self._write("mark the clean shutdown") as db:
            self._set_state(db, {"clean_shutdown": True})
            self._log(db, EventKind.SERVICE, "service stopped cleanly")

    def was_clean_shutdown(self) -> bool:
        """False if the last service run ended without :meth:`mark_clean_shutdown` (power cut,
        kill -9). True on a fresh install."""
        return bool(self.get_state("clean_shutdown", True))

    def recover_after_unclean_stop(self, *, patient_s: float | None = None) -> RecoveryReport:
        """In one transaction: interrupt active boluses (never resumed automatically), cancel
        pending ones, set the run state to STOPPED, log a recovery event, and report what the
        books say. Raising the power-loss alarm and asking a clinician to resume is the
        service's job."""
        with self._write("recover the books after an unclean stop") as db:
            previous = RunState(self._state_value(db, "run_state", RunState.STOPPED.value))
            reason = "power-loss recovery"
            interrupted = tuple(
                self._transition_bolus(
                    db, row["id"], (BolusState.ACTIVE,), BolusState.INTERRUPTED, reason=reason
                )
                for row in self._all(
                    db, "SELECT id FROM boluses WHERE state = 'active' ORDER BY id"
                )
            )
            cancelled = tuple(
                self._transition_bolus(
                    db, row["id"], (BolusState.PENDING,), BolusState.CANCELLED, reason=reason
                )
                for row in self._all(
                    db, "SELECT id FROM boluses WHERE state = 'pending' ORDER BY id"
                )
            )
            self._set_state(db, {"run_state": RunState.STOPPED.value})
            program = self._one(db, "SELECT * FROM programs ORDER BY id DESC LIMIT 1")
            totals = self._one(db, "SELECT * FROM ledger_totals WHERE id = 1")
            reservoir = self._one(db, "SELECT volume_ml FROM reservoir WHERE id = 1")
            assert totals is not None
            heartbeat = self._state_value(db, "last_heartbeat", None)
            detail = {
                "previous_run_state": previous.value,
                "program_id": None if program is None else program["id"],
                "delivered_steps": totals["steps"],
                "delivered_volume_ul": totals["volume_ul"],
                "reservoir_volume_ml": None if reservoir is None else reservoir["volume_ml"],
                "interrupted_bolus_ids": [bolus["id"] for bolus in interrupted],
                "cancelled_bolus_ids": [bolus["id"] for bolus in cancelled],
            }
            event_id = self._log(
                db,
                EventKind.RECOVERY,
                "books recovered after an unclean stop; delivery STOPPED",
                patient_s=patient_s,
                detail=detail,
            )
        return RecoveryReport(
            previous_run_state=previous,
            active_program=program,
            delivered_steps=totals["steps"],
            delivered_volume_ul=totals["volume_ul"],
            last_delivery_patient_end_s=totals["last_patient_end_s"],
            reservoir_volume_ml=None if reservoir is None else reservoir["volume_ml"],
            interrupted_boluses=interrupted,
            cancelled_boluses=cancelled,
            last_heartbeat=heartbeat,
            event_id=event_id,
        )

    def _state_value(self, db: sqlite_utils.Database, key: str, default: Any) -> Any:
        row = db.execute("SELECT value_json FROM service_state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -------------------------------------------------------------------------------- PINs

    def load_pin_hash(self, role: str) -> tuple[str, bytes, bytes] | None:
        """(scheme, salt, digest) of *role*'s PIN, or None if none is stored."""
        with self._read("read the PIN hash") as db:
            row = db.execute(
                "SELECT scheme, salt, digest FROM pins WHERE role = ?", (role,)
            ).fetchone()
            return None if row is None else (row[0], bytes(row[1]), bytes(row[2]))

    def save_pin_hash(self, role: str, scheme: str, salt: bytes, digest: bytes) -> None:
        """Store (replace) *role*'s salted PIN hash. The PIN itself is never stored."""
        row = {
            "role": role,
            "scheme": scheme,
            "salt": salt,
            "digest": digest,
            "updated_at_utc": self._now(),
        }
        with self._write("store the PIN hash") as db:
            db["pins"].upsert(row, pk="role")
            self._log(db, EventKind.PIN, f"PIN for {role} set")
