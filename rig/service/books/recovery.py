"""The books' run state, heartbeat, clean-shutdown flag and power-loss recovery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rig.service.books.schema import BolusState, Books, EventKind, RunState


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


class RecoveryBooks(Books):
    """Run state, liveness and recovery after an unclean stop (uses the bolus transitions)."""

    # --------------------------------------------------------------------------- run state

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
