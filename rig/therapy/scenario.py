"""Training scenarios: a patient, a starting pump, a timeline of events and the expected actions,
and the checklist score that follows from what the trainee did.

A scenario file (TOML, shipped in ``data/scenarios``)::

    title = "Routine refill with a new concentration"
    duration_h = 12            # patient hours the scenario lasts
    mastery_fraction = 0.9     # share of the checklist's weight needed (and no critical miss)
    [patient]                  # patient-file keys (data/patients/adult.toml), optional
    [program]                  # the starting program (a program file's keys)
    [pump]                     # reservoir_ml, concentration_ug_per_ml, running
    [[events]]                 # at_h = 2.0, or when = "refill_filled" | "alarm" | "sign"
                               #   | "effect_above" | "effect_below" | "action", with value
    fault = "pocket_fill"      # a clinical fault (rig.therapy.clinical_faults), params = {...}
    message = "…"              # what the trainee is told; hint = "…" only in guided mode
    [[expected]]               # id, action, match = {...}, after (an event id or action),
                               #   within_h or by_h, weight, critical, description
    [debrief]
    notes = ["…"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from rig.common.inputs import InputError, StrictModel, describe_validation_error, read_toml
from rig.therapy.clinical_faults import (
    CLINICAL_ACTIONS,
    PUMP_ACTIONS,
    ClinicalFault,
    fault_params,
)
from rig.therapy.drugs import parse_program
from rig.therapy.patient import MAS_LEVELS, PatientParams

SCENARIOS_DIR = Path(__file__).parent / "data" / "scenarios"
Hours = Annotated[float, Field(ge=0, le=24 * 30, allow_inf_nan=False)]
Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
ParamValue = float | int | str | bool
Trigger = Literal["refill_filled", "refill_withdrawn", "alarm", "sign", "effect_above"]
TriggerOrBelow = Trigger | Literal["effect_below", "action"]
ACTIONS = {**PUMP_ACTIONS, **CLINICAL_ACTIONS}
MAS_LEVELS_INDEX = {level: index for index, level in enumerate(MAS_LEVELS)}


class PumpStart(StrictModel):
    reservoir_ml: Annotated[float, Field(gt=0, le=40, allow_inf_nan=False)] = 20.0
    concentration_ug_per_ml: Annotated[float, Field(gt=0, le=2000, allow_inf_nan=False)] | None = (
        None
    )
    """What the reservoir really holds (default: the program's concentration)."""
    running: bool = True


class ScenarioEvent(StrictModel):
    id: Identifier
    at_h: Hours | None = None
    when: TriggerOrBelow | None = None
    value: ParamValue | None = None
    fault: Annotated[ClinicalFault, Field(strict=False)] | None = None
    params: dict[str, ParamValue] = Field(default_factory=dict)
    message: str = ""
    hint: str = ""

    @model_validator(mode="after")
    def _one_trigger(self) -> ScenarioEvent:
        if (self.at_h is None) == (self.when is None):
            raise ValueError(f"event {self.id}: give exactly one of at_h and when")
        if self.when in ("alarm", "sign", "effect_above", "effect_below", "action") and (
            self.value is None
        ):
            raise ValueError(f"event {self.id}: when = {self.when!r} needs a value")
        if self.when == "action" and self.value not in ACTIONS:
            raise ValueError(f"event {self.id}: value {self.value!r} is not an action")
        if self.fault is not None:
            fault_params(self.fault, self.params)
        return self


class ExpectedAction(StrictModel):
    id: Identifier
    action: str
    description: str
    match: dict[str, ParamValue] = Field(default_factory=dict)
    """Parameters the action must have; ``min_X`` / ``max_X`` bound parameter ``X``."""
    after: str | None = None
    """An event id or an action: the deadline counts from it, and the item is scored only once
    it has happened (default: the scenario's start)."""
    within_h: Annotated[float, Field(gt=0, le=24 * 30, allow_inf_nan=False)] | None = None
    weight: Annotated[int, Field(ge=1, le=10)] = 1
    critical: bool = False
    hint: str = ""

    @model_validator(mode="after")
    def _known_action(self) -> ExpectedAction:
        if self.action not in ACTIONS:
            raise ValueError(
                f"expected {self.id}: action {self.action!r} is unknown; allowed "
                + ", ".join(sorted(ACTIONS))
            )
        return self


class ScriptedAction(StrictModel):
    """One step of a scripted trainee (the scenario's model answer, or a test's)."""

    at_h: Hours
    action: str
    params: dict[str, ParamValue] = Field(default_factory=dict)
    program: dict[str, Any] | None = None


class Debrief(StrictModel):
    notes: list[str] = Field(default_factory=list)


class Scenario(StrictModel):
    name: Identifier = "scenario"
    title: str
    summary: str = ""
    duration_h: Annotated[float, Field(gt=0, le=24 * 14, allow_inf_nan=False)]
    mastery_fraction: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.9
    patient: PatientParams = PatientParams()
    program: dict[str, Any]
    pump: PumpStart = PumpStart()
    events: list[ScenarioEvent] = Field(default_factory=list)
    expected: list[ExpectedAction] = Field(min_length=1)
    model_answer: list[ScriptedAction] = Field(default_factory=list)
    debrief: Debrief = Debrief()

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        ids = [event.id for event in self.events] + [item.id for item in self.expected]
        if len(ids) != len(set(ids)):
            raise ValueError("event and expected ids must be unique")
        event_ids = {event.id for event in self.events}
        for item in self.expected:
            if item.after is not None and item.after not in event_ids | set(ACTIONS):
                raise ValueError(
                    f"expected {item.id}: after {item.after!r} is neither an event nor an action"
                )
        for step in self.model_answer:
            if step.action not in ACTIONS:
                raise ValueError(f"model_answer: action {step.action!r} is unknown")
        return self


def parse_scenario(data: dict, source: str = "scenario", name: str | None = None) -> Scenario:
    """Validate a scenario's contents; :class:`InputError` names each bad key."""
    if name is not None and "name" not in data:
        data = {**data, "name": name}
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, source)) from None
    parse_program(scenario.program, f"{source}: program")
    for number, step in enumerate(scenario.model_answer):
        if step.program is not None:
            parse_program(step.program, f"{source}: model_answer.{number}.program")
    return scenario


def shipped_scenarios() -> dict[str, Path]:
    """The scenario files shipped with the rig, by name."""
    return {path.stem: path for path in sorted(SCENARIOS_DIR.glob("*.toml"))}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a scenario file."""
    shipped = shipped_scenarios()
    path = shipped.get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        raise InputError(
            f"scenario: {str(name_or_path)!r} is neither a shipped scenario nor a file; "
            f"shipped: {', '.join(shipped)}"
        )
    return parse_scenario(read_toml(path, "scenario file"), str(path), name=path.stem)


class Action(StrictModel):
    """Something done during a run: by the trainee (on the rig or recorded) or by a fault."""

    at_h: float
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    source: str = "trainee"


class ItemResult(StrictModel):
    id: str
    description: str
    action: str
    weight: int
    critical: bool
    triggered: bool
    scored: bool
    done: bool
    at_h: float | None
    deadline_h: float | None


class Score(StrictModel):
    score: float
    points: int
    max_points: int
    mastery: bool
    mastery_fraction: float
    missed: list[str]
    critical_missed: list[str]
    items: list[ItemResult]


def _matches(action: Action, item: ExpectedAction) -> bool:
    if action.action != item.action:
        return False
    for key, wanted in item.match.items():
        if key.startswith(("min_", "max_")):
            value = action.params.get(key[4:])
            if not isinstance(value, int | float):
                return False
            if (key.startswith("min_") and value < wanted) or (
                key.startswith("max_") and value > wanted
            ):
                return False
        elif action.params.get(key) != wanted:
            return False
    return True


def score_run(
    scenario: Scenario, actions: list[Action], fired: dict[str, float], ended_h: float
) -> Score:
    """The checklist: each expected action done in time after its trigger (an event id in
    *fired* with its hour, or an earlier action). An item is not scored while its trigger has
    not happened, nor when the run ended before its deadline with it still open."""
    items: list[ItemResult] = []
    trainee = [action for action in actions if action.source == "trainee"]
    for item in scenario.expected:
        start_h: float | None = 0.0
        if item.after is not None:
            start_h = fired.get(item.after)
            if start_h is None:
                start_h = next((a.at_h for a in trainee if a.action == item.after), None)
        deadline_h = None
        if start_h is not None and item.within_h is not None:
            deadline_h = start_h + item.within_h
        done_at = None
        if start_h is not None:
            done_at = next(
                (
                    a.at_h
                    for a in trainee
                    if a.at_h >= start_h
                    and (deadline_h is None or a.at_h <= deadline_h)
                    and _matches(a, item)
                ),
                None,
            )
        items.append(
            ItemResult(
                id=item.id,
                description=item.description,
                action=item.action,
                weight=item.weight,
                critical=item.critical,
                triggered=start_h is not None and start_h <= ended_h,
                scored=start_h is not None
                and (done_at is not None or deadline_h is None or deadline_h <= ended_h),
                done=done_at is not None,
                at_h=done_at,
                deadline_h=deadline_h,
            )
        )
    scored = [item for item in items if item.scored]
    max_points = sum(item.weight for item in scored)
    points = sum(item.weight for item in scored if item.done)
    missed = [item.id for item in scored if not item.done]
    critical_missed = [item.id for item in scored if item.critical and not item.done]
    fraction = points / max_points if max_points else 0.0
    return Score(
        score=round(fraction, 4),
        points=points,
        max_points=max_points,
        mastery=bool(max_points) and fraction >= scenario.mastery_fraction and not critical_missed,
        mastery_fraction=scenario.mastery_fraction,
        missed=missed,
        critical_missed=critical_missed,
        items=items,
    )
