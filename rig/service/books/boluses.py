"""The books' boluses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlite_utils

from rig.service.books.schema import (
    BolusState,
    BolusStateError,
    Books,
    EventKind,
    _dumps,
    _limit,
)


class BolusBooks(Books):
    """Bolus requests and their guarded state transitions."""

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
