"""The books' programs, event log and audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rig.service.books.schema import Books, EventKind, _dumps, _limit


class ProgramEventBooks(Books):
    """Confirmed program versions, the event log and the audit trail (all append-only)."""

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
