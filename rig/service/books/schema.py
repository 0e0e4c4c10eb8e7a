"""The books' schema and vocabulary, and :class:`Books`, the connection plumbing that every
concern of the books (programs and events, alarms, ledger, boluses, recovery, PINs) builds on."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

import sqlite_utils

SECONDS_PER_PATIENT_DAY = 86_400.0
DATA_DIR_MODE = 0o700
BOOKS_FILE_MODE = 0o600
"""The books and their directory are the rig owner's alone (SQLite gives the WAL and shared-memory
files the database file's permissions)."""
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
    ``constraint``, ``schema``, ``pending`` (earlier records still wait to be written) or
    ``other``; ``sqlite_error`` is SQLite's error name, if any.
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
    STORAGE = "storage"
    CALIBRATION = "calibration"


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
    (
        2,
        "calibration runs and calibrations",
        (
            """CREATE TABLE calibration_runs (
                id INTEGER PRIMARY KEY,
                procedure TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed', 'cancelled')),
                role TEXT,
                started_at_utc TEXT NOT NULL,
                finished_at_utc TEXT,
                params_json TEXT NOT NULL CHECK (json_valid(params_json)),
                in_force_json TEXT NOT NULL CHECK (json_valid(in_force_json)),
                samples_json TEXT CHECK (samples_json IS NULL OR json_valid(samples_json)),
                result_json TEXT CHECK (result_json IS NULL OR json_valid(result_json)),
                message TEXT NOT NULL DEFAULT ''
            ) STRICT""",
            """CREATE TABLE calibrations (
                version INTEGER PRIMARY KEY,
                kind TEXT NOT NULL CHECK (kind IN ('volume', 'flow_sensor')),
                action TEXT NOT NULL CHECK (action IN ('apply', 'rollback')),
                run_id INTEGER REFERENCES calibration_runs (id),
                value_json TEXT CHECK (value_json IS NULL OR json_valid(value_json)),
                role TEXT,
                at_utc TEXT NOT NULL
            ) STRICT""",
            *(
                f"""CREATE TRIGGER calibrations_append_only_{verb.lower()} BEFORE {verb}
                ON calibrations BEGIN SELECT RAISE(ABORT, 'calibrations is append-only'); END"""
                for verb in ("UPDATE", "DELETE")
            ),
        ),
    ),
)
SCHEMA_VERSION = _MIGRATIONS[-1][0]


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


def _private_files(path: Path) -> None:
    """Create the data directory (0700) and the books file (0600) before SQLite opens it; tighten
    an existing books file to 0600. A directory that already existed is left as it is."""
    try:
        path.parent.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot create the data directory {path.parent}: {error.strerror}",
            kind="cantopen",
        ) from error
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, BOOKS_FILE_MODE)
    except OSError as error:
        raise StorageError(
            f"cannot open the books {path}: {error.strerror}", kind="cantopen"
        ) from error
    try:
        os.fchmod(descriptor, BOOKS_FILE_MODE)
    finally:
        os.close(descriptor)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_QUERY_ROWS:
        raise ValueError(f"limit must be between 1 and {MAX_QUERY_ROWS}, got {limit}")
    return limit


class Books:
    """The connection plumbing and service-state keys shared by every concern of the books."""

    def __init__(self, db: sqlite_utils.Database, path: Path, clock: Clock) -> None:
        self._db = db
        self._path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._transaction_thread: int | None = None

    # ----------------------------------------------------------------- opening and plumbing

    @classmethod
    def open(cls, path: Path | str, *, clock: Clock = utc_now, busy_timeout_s: float = 5.0) -> Self:
        """Open (creating directory and file if needed) and migrate the books at *path*."""
        path = Path(path)
        _private_files(path)
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

    def __enter__(self) -> Self:
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
        """One transaction under the lock; any SQLite error becomes :class:`StorageError`.

        Inside :meth:`transaction` it is a savepoint of the caller's transaction.
        """
        with self._lock:
            outermost = self._transaction_thread is None
            if outermost:
                self._transaction_thread = threading.get_ident()
            try:
                with self._db.atomic():
                    yield self._db
            except sqlite3.Error as error:
                raise _storage_error(error, operation, self._path) from error
            finally:
                if outermost:
                    self._transaction_thread = None

    def transaction(self, operation: str) -> AbstractContextManager[sqlite_utils.Database]:
        """Several writes as one transaction: every store method called inside it (on this
        thread) joins it, and nothing is committed unless all of them succeed. A failure, the
        commit's included, raises :class:`StorageError` naming *operation*."""
        return self._write(operation)

    @property
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside a transaction of the books."""
        return self._transaction_thread == threading.get_ident()

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

    def _state_value(self, db: sqlite_utils.Database, key: str, default: Any) -> Any:
        row = db.execute("SELECT value_json FROM service_state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])
