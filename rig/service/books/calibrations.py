"""The books' calibration runs (parameters, raw samples, results, who, the calibration in force)
and the calibrations applied, as an append-only, versioned history."""

from __future__ import annotations

from typing import Any

from rig.service.books.schema import Books, EventKind, _dumps

CALIBRATION_KINDS = ("volume", "flow_sensor")


class CalibrationBooks(Books):
    """Calibration runs and the versioned calibrations in force."""

    def start_calibration_run(
        self, procedure: str, params: dict[str, Any], in_force: dict[str, Any], role: str | None
    ) -> int:
        row = {
            "procedure": procedure,
            "state": "running",
            "role": role,
            "started_at_utc": self._now(),
            "params_json": _dumps(params),
            "in_force_json": _dumps(in_force),
        }
        with self._write("start the calibration run") as db:
            run_id = db["calibration_runs"].insert(row).last_pk
            self._log(
                db, EventKind.CALIBRATION, f"{procedure} calibration run {run_id} started",
                role=role, detail={"run_id": run_id, "params": params},
            )  # fmt: skip
            return run_id

    def finish_calibration_run(
        self,
        run_id: int,
        state: str,
        *,
        samples: list[dict[str, Any]],
        result: dict[str, Any] | None = None,
        message: str = "",
        pumped_ml: float = 0.0,
    ) -> None:
        """Close a run; what it pumped out of the syringe (the reservoir) leaves the reservoir's
        volume in the same transaction (floored at 0 mL)."""
        values = {
            "state": state,
            "finished_at_utc": self._now(),
            "samples_json": _dumps(samples),
            "result_json": None if result is None else _dumps(result),
            "message": message,
        }
        with self._write("finish the calibration run") as db:
            db["calibration_runs"].update(run_id, values)
            if pumped_ml > 0:
                db.execute(
                    "UPDATE reservoir SET volume_ml = max(0.0, volume_ml - ?), updated_at_utc = ?"
                    " WHERE id = 1",
                    (pumped_ml, values["finished_at_utc"]),
                )
                self._log(
                    db, EventKind.RESERVOIR,
                    f"calibration run {run_id} pumped {pumped_ml:.4f} mL out of the reservoir",
                    detail={"run_id": run_id, "pumped_ml": pumped_ml},
                )  # fmt: skip
            self._log(
                db, EventKind.CALIBRATION, f"calibration run {run_id} {state}"
                + (f": {message}" if message else ""), detail={"run_id": run_id},
            )  # fmt: skip

    def calibration_run(self, run_id: int) -> dict[str, Any] | None:
        with self._read("read the calibration run") as db:
            return self._one(db, "SELECT * FROM calibration_runs WHERE id = ?", (run_id,))

    def calibration_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs, newest first, without their samples."""
        with self._read("read the calibration runs") as db:
            return self._all(
                db,
                "SELECT id, procedure, state, role, started_at_utc, finished_at_utc, params_json,"
                " in_force_json, message FROM calibration_runs ORDER BY id DESC LIMIT ?",
                (limit,),
            )

    def add_calibration(
        self,
        kind: str,
        action: str,
        value: dict[str, Any] | None,
        *,
        run_id: int | None,
        role: str | None,
    ) -> int:
        """Append a version of *kind*'s calibration (``value`` None: back to nominal)."""
        row = {
            "kind": kind,
            "action": action,
            "run_id": run_id,
            "value_json": None if value is None else _dumps(value),
            "role": role,
            "at_utc": self._now(),
        }
        with self._write(f"{action} the {kind} calibration") as db:
            version = db["calibrations"].insert(row).last_pk
            what = "nominal" if value is None else f"run {run_id}" if run_id else "previous"
            self._log(
                db, EventKind.CALIBRATION,
                f"{kind} calibration version {version}: {action} ({what})",
                role=role, detail=row,
            )  # fmt: skip
            return version

    def calibration_history(self, kind: str) -> list[dict[str, Any]]:
        """Every version of *kind*'s calibration, oldest first."""
        with self._read("read the calibrations") as db:
            return self._all(
                db, "SELECT * FROM calibrations WHERE kind = ? ORDER BY version", (kind,)
            )

    def calibrations_in_force(self) -> dict[str, dict[str, Any] | None]:
        """The latest version of each kind (None where none was ever applied)."""
        with self._read("read the calibrations in force") as db:
            return {
                kind: self._one(
                    db,
                    "SELECT * FROM calibrations WHERE kind = ? ORDER BY version DESC LIMIT 1",
                    (kind,),
                )
                for kind in CALIBRATION_KINDS
            }
