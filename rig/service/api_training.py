"""The training API: scenarios, the clinical fault catalogue, the patient, scores and debriefs.

Added to the app by :func:`add_training_routes` (one line in :func:`rig.service.api.create_app`).
Starting and stopping a scenario is the trainer's (the clinician role); recording a clinical
action (assessing the patient, a test dose, a decision) is open to any session.
"""

import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query
from fastapi.responses import PlainTextResponse
from pydantic import Field

from rig.common.inputs import StrictModel
from rig.service.api_bodies import Debrief, ScenarioRun, TrainingAction, TrainingCatalogue
from rig.service.auth import Action, Role
from rig.service.errors import ANY, BODY, CHANGE, refuse, responses
from rig.service.loop import RigService, StateConflict
from rig.service.training import TrainingDesk, debrief_csv, reports
from rig.therapy.clinical_faults import CATALOGUE, CLINICAL_ACTIONS, ClinicalFault
from rig.therapy.scenario import load_scenario, shipped_scenarios

ParamValue = float | int | str | bool


class StartRequest(StrictModel):
    name: Annotated[str, Field(min_length=1, max_length=40, description="a shipped scenario")]
    mode: Literal["guided", "assessment"] = "assessment"
    trainee: Annotated[str, Field(min_length=1, max_length=60)] | None = None


class ActionRequest(StrictModel):
    action: Annotated[str, Field(min_length=1, max_length=40, description="a clinical action")]
    params: Annotated[dict[str, ParamValue], Field(max_length=8)] = Field(default_factory=dict)


class FaultRequest(StrictModel):
    fault: Annotated[ClinicalFault, Field(strict=False, description="a clinical fault")]
    params: Annotated[dict[str, ParamValue], Field(max_length=8)] = Field(default_factory=dict)


def scenario_summaries() -> list[dict[str, Any]]:
    """The shipped scenarios: name, title, summary, duration and mastery threshold."""
    listed = []
    for name in shipped_scenarios():
        scenario = load_scenario(name)
        listed.append(
            {
                "name": name,
                "title": scenario.title,
                "summary": scenario.summary,
                "duration_h": scenario.duration_h,
                "mastery_fraction": scenario.mastery_fraction,
                "faults": sorted({e.fault.value for e in scenario.events if e.fault}),
                "checklist_items": len(scenario.expected),
            }
        )
    return listed


def add_training_routes(
    app: FastAPI,
    service: RigService,
    require: Callable[[Action], Any],
    audited: Callable[..., Any],
) -> TrainingDesk:
    """The /api/training operations over one :class:`TrainingDesk`."""
    desk = TrainingDesk(service)

    def current_run() -> Any:
        try:
            return desk.current()
        except StateConflict as error:
            raise refuse(409, "training", str(error).removeprefix("training: ")) from None

    @app.get("/api/training", response_model=None, responses=responses(*ANY, ok=TrainingCatalogue))
    def catalogue() -> dict[str, Any]:
        """Shipped scenarios, the clinical fault catalogue and the clinical actions."""
        return {
            "scenarios": scenario_summaries(),
            "faults": [dataclasses.asdict(entry) for entry in CATALOGUE],
            "actions": CLINICAL_ACTIONS,
        }

    @app.post(
        "/api/training/scenario",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 404, 409, ok=ScenarioRun),
    )
    def start(
        body: StartRequest, role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))]
    ) -> dict[str, Any]:
        """Start a scenario (the pump is set up as it says; the previous run must have ended)."""
        if body.name not in shipped_scenarios():
            raise refuse(404, "name", "no such scenario", ", ".join(shipped_scenarios()))
        scenario = load_scenario(body.name)
        return audited(
            role, "training.start", body, lambda: desk.start(scenario, body.mode, body.trainee)
        )

    @app.get(
        "/api/training/scenario",
        response_model=None,
        responses=responses(*ANY, 409, 422, ok=ScenarioRun),
    )
    def status(
        trainer: Annotated[bool, Query(description="hints and timeline in any mode")] = False,
    ) -> dict[str, Any]:
        """The run: patient time, the patient (vitals, MAS, signs), messages, actions; in
        guided mode (or with trainer=true) also the hints and the patient's timeline."""
        run = current_run()
        run.tick()
        return run.status(trainer=trainer)

    @app.post(
        "/api/training/scenario/stop",
        response_model=None,
        responses=responses(*CHANGE, 409, ok=Debrief),
    )
    def stop(
        role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))],
    ) -> dict[str, Any]:
        """End the run now: its score and debrief (kept in the books)."""
        run = current_run()
        if run.finished:
            raise refuse(409, "training", "the scenario has already ended")
        return audited(role, "training.stop", {}, lambda: run.finish(stopped=True))

    @app.post(
        "/api/training/actions",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=TrainingAction),
    )
    def act(
        body: ActionRequest, role: Annotated[Role, Depends(require(Action.VIEW))]
    ) -> dict[str, Any]:
        """Record a clinical action of the trainee (a lumbar test dose reaches the patient)."""
        run = current_run()
        return audited(role, "training.action", body, lambda: run.act(body.action, body.params))

    report_responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "the debrief as JSON, or as CSV with format=csv",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Debrief"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        **responses(*ANY, 404, 422),
    }

    @app.post(
        "/api/training/faults",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=TrainingAction),
    )
    def inject(
        body: FaultRequest, role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))]
    ) -> dict[str, Any]:
        """Set a clinical fault in the running scenario now (see the catalogue)."""
        run = current_run()
        return audited(
            role, "training.fault", body, lambda: run.inject(body.fault.value, body.params)
        )

    @app.get("/api/training/report", response_model=None, responses=report_responses)
    def report(
        index: Annotated[int, Query(ge=0, le=100, description="0: the latest")] = 0,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        """A debrief kept in the books: score, checklist, actions, the patient's timeline."""
        kept = reports(service, limit=index + 1)
        if len(kept) <= index:
            raise refuse(404, "index", "no such debrief", f"0 to {len(kept) - 1}" if kept else None)
        if format == "csv":
            return PlainTextResponse(debrief_csv(kept[index]), media_type="text/csv")
        return kept[index]

    return desk
