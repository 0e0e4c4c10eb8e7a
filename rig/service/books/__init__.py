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

from rig.service.books.alarms import AlarmBooks
from rig.service.books.boluses import BolusBooks
from rig.service.books.calibrations import CalibrationBooks
from rig.service.books.events import ProgramEventBooks
from rig.service.books.ledger import LedgerBooks
from rig.service.books.pins import PinBooks
from rig.service.books.recovery import RecoveryBooks, RecoveryReport
from rig.service.books.schema import (
    AlarmStateError,
    BolusState,
    BolusStateError,
    EventKind,
    RunState,
    StateError,
    StorageError,
    iso_utc,
    utc_now,
)

__all__ = [
    "AlarmStateError",
    "BolusState",
    "BolusStateError",
    "EventKind",
    "RecoveryReport",
    "RigStore",
    "RunState",
    "StateError",
    "StorageError",
    "iso_utc",
    "utc_now",
]


class RigStore(
    ProgramEventBooks,
    AlarmBooks,
    LedgerBooks,
    BolusBooks,
    RecoveryBooks,
    PinBooks,
    CalibrationBooks,
):
    """The rig's books in one SQLite file. Open with :meth:`RigStore.open`."""
