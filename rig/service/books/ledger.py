"""The books' reservoir and delivery ledger."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from rig.service.books.schema import (
    SECONDS_PER_PATIENT_DAY,
    BolusState,
    BolusStateError,
    Books,
    EventKind,
    StateError,
    _limit,
    iso_utc,
)


class LedgerBooks(Books):
    """The reservoir and the delivery ledger with its running totals."""

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
        state: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Commit one delivered interval: append the ledger row, take its volume out of the
        reservoir (floored at 0 mL), add it to the running totals and, for a bolus, to the
        active bolus's delivered volume, and set the service *state* keys that go with it, all
        in one transaction. Returns the ledger row."""
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
            if state:
                self._set_state(db, state)
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
