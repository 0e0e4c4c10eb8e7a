"""Records the service owes the books: written at once, or kept in order until they can be.

The delivery loop and the alarm manager must act (stop the motor, sound an alarm) whether or not
the books can be written. What they record goes through :class:`PendingRecords`: written at once
when the books take it, else queued, in order, and written by :meth:`PendingRecords.flush` as soon
as the books take writes again. A write that fails inside a transaction of the books is not
queued: the error goes to the caller, whose transaction is rolled back as a whole.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rig.service.books import RigStore, StorageError

log = logging.getLogger("itbrig.service")

MAX_PENDING_RECORDS = 2000
"""Records kept while the books cannot be written; later ones are counted, not kept."""


@dataclass(frozen=True)
class PendingRecord:
    what: str
    write: Callable[[], object]


class PendingRecords:
    """Writes to the books, in order; those that fail wait for :meth:`flush`.

    *on_failure* is told of every write that failed outside a transaction (called without any
    lock of this object held).
    """

    def __init__(
        self,
        store: RigStore,
        on_failure: Callable[[StorageError], None] | None = None,
        *,
        limit: int = MAX_PENDING_RECORDS,
    ) -> None:
        self._store = store
        self.on_failure = on_failure
        self._limit = limit
        self._queue: deque[PendingRecord] = deque()
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self.dropped = 0
        self.written_late = 0

    @property
    def pending(self) -> int:
        """Records waiting for the books."""
        with self._lock:
            return len(self._queue)

    def write(self, what: str, write: Callable[[], object]) -> bool:
        """Write now (True), or queue behind earlier records that are still waiting (False).

        Inside a transaction of the books a :class:`StorageError` is raised, not queued. No lock
        of this object is held while the books are written (a thread inside a transaction of
        the books may be waiting for this one).
        """
        with self._lock:
            if self._queue:
                self._keep(PendingRecord(what, write))
                return False
        try:
            write()
            return True
        except StorageError as error:
            if self._store.in_transaction:
                raise
            with self._lock:
                self._keep(PendingRecord(what, write))
            failure = error
        log.error("books: cannot %s: %s (kept to write later)", what, failure)
        if self.on_failure is not None:
            self.on_failure(failure)
        return False

    def _keep(self, record: PendingRecord) -> None:
        if len(self._queue) >= self._limit:
            self.dropped += 1
            return
        self._queue.append(record)

    def flush(self) -> bool:
        """Write every waiting record, oldest first; True once none is left."""
        with self._flush_lock:
            while True:
                with self._lock:
                    if not self._queue:
                        return True
                    record = self._queue[0]
                try:
                    record.write()
                except StorageError:
                    return False
                with self._lock:
                    self._queue.popleft()
                    self.written_late += 1
