"""The calibration part of the API: procedures, runs, their records and reports, and the
calibrations in force. Reading is open; starting, cancelling, applying and rolling back need the
engineer's session and are audited. Included by :func:`rig.service.api.create_app`."""

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import Field

from hal.config import StrictModel
from rig.service.api_bodies import (
    CalibrationJob,
    CalibrationOverview,
    CalibrationRunRow,
    CalibrationStarted,
    CalibrationVersion,
)
from rig.service.auth import Action, Role
from rig.service.errors import ANY, BODY, CHANGE, problems_from_text, responses
from rig.service.loop import RigService

SQLITE_MAX_INTEGER = 2**63 - 1
RunId = Annotated[int, Path(ge=1, le=SQLITE_MAX_INTEGER, description="a calibration run's id")]
EXPORTS = {
    "samples.csv": "text/csv",
    "results.csv": "text/csv",
    "report.pdf": "application/pdf",
}
ExportName = Literal["samples.csv", "results.csv", "report.pdf"]


class StartRequest(StrictModel):
    procedure: Annotated[
        str,
        Field(
            min_length=1,
            max_length=40,
            description="volume, accuracy, rate, flow-sensor, occlusion or bolus",
            examples=["volume"],
        ),
    ]
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the procedure's parameters (GET /api/calibration lists each schema)",
    )


class ApplyRequest(StrictModel):
    run_id: Annotated[int, Field(ge=1, le=SQLITE_MAX_INTEGER)]


class RollbackRequest(StrictModel):
    kind: Literal["volume", "flow_sensor"]


def add_calibration_routes(
    app: FastAPI,
    service: RigService,
    *,
    require: Callable[[Action], Any],
    audited: Callable[..., Any],
) -> None:
    """Add the calibration endpoints to *app*."""
    jobs = service.calibrations
    store = service.store

    def run_or_404(run_id: int) -> dict[str, Any]:
        run = store.calibration_run(run_id)
        if run is None:
            raise HTTPException(404, problems_from_text(f"run_id: no calibration run {run_id}"))
        return run

    @app.get(
        "/api/calibration", response_model=None, responses=responses(*ANY, ok=CalibrationOverview)
    )
    def calibration(
        since: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> dict[str, Any]:
        """The procedures and their parameters, the calibrations in force, and the run going on
        (or the last) with its samples from number *since* on (for a live plot)."""
        job = jobs.job
        status = None
        if job is not None:
            hook = jobs.hook()
            status = job.status() | {
                "samples_since": job.samples[since:],
                "result": job.result,
                "summary": hook.summary(job.result) if job.result else [],
                "plots": hook.live(job.procedure, job.params, job.samples),
            }
        return {"procedures": jobs.procedures(), "in_force": jobs.in_force(), "job": status}

    @app.get(
        "/api/calibration/runs",
        response_model=None,
        responses=responses(*ANY, ok=list[CalibrationRunRow]),
    )
    def runs() -> list[dict[str, Any]]:
        """The latest calibration runs, newest first (without their samples)."""
        return store.calibration_runs()

    @app.get(
        "/api/calibration/runs/{run_id}",
        response_model=None,
        responses=responses(*ANY, 404, ok=CalibrationRunRow),
    )
    def run(run_id: RunId) -> dict[str, Any]:
        """One run as the books hold it: parameters, raw samples, result, who, the calibration
        in force."""
        return run_or_404(run_id)

    @app.get(
        "/api/calibration/runs/{run_id}/{name}",
        responses={
            **responses(*ANY, 404, 409),
            200: {"content": {media: {} for media in set(EXPORTS.values())}},
        },
        response_class=Response,
    )
    def export(run_id: RunId, name: ExportName) -> Response:
        """The run's raw samples or results as CSV, or its PDF report."""
        data = jobs.hook().export(run_or_404(run_id), name)
        return Response(data, media_type=EXPORTS[name])

    @app.post(
        "/api/calibration/runs",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=CalibrationStarted),
    )
    def start(
        body: StartRequest, role: Annotated[Role, Depends(require(Action.CALIBRATION))]
    ) -> dict[str, Any]:
        """Start a procedure on the bench (therapy stopped; the state is ``calibrating``)."""
        return audited(
            role,
            "calibration.start",
            body,
            lambda: jobs.start(body.procedure, body.params, role.value),
        )

    @app.post(
        "/api/calibration/cancel",
        response_model=None,
        responses=responses(*CHANGE, 409, ok=CalibrationJob),
    )
    def cancel(role: Annotated[Role, Depends(require(Action.CALIBRATION))]) -> dict[str, Any]:
        """Cancel the run going on: the motor stops at once and the catheter is opened."""
        return audited(role, "calibration.cancel", {}, jobs.cancel)

    @app.post(
        "/api/calibration/apply",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=CalibrationVersion),
    )
    def apply(
        body: ApplyRequest, role: Annotated[Role, Depends(require(Action.CALIBRATION))]
    ) -> dict[str, Any]:
        """Put a finished volume or flow-sensor run's result in force, as a new version."""
        return audited(role, "calibration.apply", body, lambda: jobs.apply(body.run_id, role.value))

    @app.post(
        "/api/calibration/rollback",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=CalibrationVersion),
    )
    def rollback(
        body: RollbackRequest, role: Annotated[Role, Depends(require(Action.CALIBRATION))]
    ) -> dict[str, Any]:
        """Put back the version of a calibration before the one in force."""
        return audited(
            role, "calibration.rollback", body, lambda: jobs.rollback(body.kind, role.value)
        )
