"""The books' alarms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from rig.service.books.schema import (
    ALARM_PRIORITIES,
    AlarmStateError,
    Books,
    EventKind,
    _limit,
    iso_utc,
)


class AlarmBooks(Books):
    """Alarm rows: raised, acknowledged, silenced, cleared; at most one active per code."""

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
