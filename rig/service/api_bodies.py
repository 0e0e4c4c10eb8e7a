"""The bodies of the API's successful answers, for the OpenAPI schema.

Declared, not enforced at answer time: an answer is never turned into a 500 over its shape.
The suite's schemathesis run checks every answer against these (``response_schema_conformance``).
Objects allow further keys, so a client reads what it knows and a new field breaks no one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rig.therapy.engine import BolusDecision, Proposal, TherapyStatus
from rig.therapy.reservoir import RefillVerdict

__all__ = [
    "Acknowledged",
    "AlarmsBody",
    "Aspirating",
    "BenchBody",
    "BolusDecision",
    "BolusRow",
    "CalibrationJob",
    "CalibrationOverview",
    "CalibrationRunRow",
    "CalibrationStarted",
    "CalibrationVersion",
    "DayVolume",
    "Debrief",
    "EventRow",
    "FaultsBody",
    "FillBody",
    "LoggedIn",
    "LoggedOut",
    "LoopBody",
    "PinChanged",
    "ProgramRow",
    "Proposal",
    "RefillVerdict",
    "ScenarioRun",
    "SelfTestBody",
    "Silenced",
    "StatusBody",
    "TrainingAction",
    "TrainingCatalogue",
]


class Open(BaseModel):
    """An object that may carry further keys."""

    model_config = ConfigDict(extra="allow")


class LoggedIn(Open):
    token: str = Field(description="send it as X-Session on every change")
    role: Literal["trainee", "clinician", "engineer"]


class LoggedOut(Open):
    ok: bool


class Security(Open):
    factory_pins: list[str] = Field(description="roles still on their factory PIN")
    warning: str | None
    access_token_required: bool


class PinChanged(Open):
    role: str
    changed: bool
    security: Security


class ActiveAlarmBody(Open):
    id: int | None = Field(description="null while the books cannot take it")
    code: str
    priority: Literal["high", "medium", "low"]
    title: str
    message: str
    action: str
    raised_at: str
    acknowledged: bool
    condition_present: bool
    on_books: bool


class AlarmRow(Open):
    id: int
    code: str
    priority: str
    raised_at_utc: str
    patient_s: float | None
    message: str
    acknowledged_at_utc: str | None
    silenced_until_utc: str | None
    cleared_at_utc: str | None


class AlarmsBody(Open):
    active: list[ActiveAlarmBody]
    silence_remaining_s: float
    history: list[AlarmRow]


class Acknowledged(Open):
    acknowledged: list[int] = Field(description="ids of the alarms acknowledged")


class Silenced(Open):
    silenced_s: float


class Storage(Open):
    ok: bool
    error: str | None
    kind: str | None
    failed_since: str | None
    pending_records: int
    read_error: str | None = None


class LoopBody(Open):
    period_s: float
    since: str
    ticks: int
    max_gap_s: float
    max_tick_s: float
    late_ticks: int
    max_wake_late_s: float
    max_step_lateness_s: float


class StatusBody(Open):
    training_notice: str
    state: str = Field(description="running, stopped, alarm, recovery, refilling, ...")
    hal: str
    self_test_passed: bool | None
    time_compression: float
    clock: dict[str, Any] = Field(description="nominal and effective time compression")
    patient_time: str
    therapy: TherapyStatus | None
    rates: dict[str, Any]
    alarms: list[ActiveAlarmBody]
    silence_remaining_s: float
    delivered: dict[str, Any]
    reservoir: dict[str, Any] = Field(description="what the reservoir really holds")
    refill: dict[str, Any]
    flow: dict[str, Any]
    storage: Storage
    loop: LoopBody
    security: Security


class ProgramRow(Open):
    id: int
    confirmed_at_utc: str
    patient_s: float | None
    role: str | None
    program: dict[str, Any]
    summary: str


class EventRow(Open):
    id: int
    at_utc: str
    patient_s: float | None
    kind: str
    role: str | None
    message: str
    detail: Any = None


class BolusRow(Open):
    id: int
    kind: str
    state: Literal["pending", "active", "done", "cancelled", "interrupted"]
    requested_at_utc: str
    role: str | None
    volume_ul: float
    delivered_ul: float
    params: dict[str, Any] | None
    started_at_utc: str | None = None
    ended_at_utc: str | None = None


class FaultsBody(Open):
    bench: dict[str, Any]
    sensor: dict[str, Any]
    supply_concentration_ug_per_ml: float | None


class BenchBody(Open):
    kind: str
    steps_issued: int
    ul_per_step: float
    faults: FaultsBody


class CheckBody(Open):
    name: str
    passed: bool
    detail: str


class SelfTestBody(Open):
    passed: bool
    checks: list[CheckBody]


class DayVolume(Open):
    day: float
    volume_ml: float


class FillBody(Open):
    volume_ml: float | None = Field(default=None, description="absent while a valve fill runs")
    concentration_ug_per_ml: float | None = None
    phase: str | None = Field(default=None, description="filling: the status's refill tells")


class Aspirating(Open):
    phase: Literal["aspirating"]


class TrainingCatalogue(Open):
    scenarios: list[dict[str, Any]] = Field(description="name, title, summary, duration_h, ...")
    faults: list[dict[str, Any]] = Field(description="the clinical fault catalogue")
    actions: dict[str, str] = Field(description="clinical action → what it means")


class ScenarioRun(Open):
    scenario: str
    title: str
    mode: Literal["guided", "assessment"]
    trainee: str | None
    at_h: float = Field(description="patient hours since the scenario started")
    duration_h: float
    finished: bool
    patient: dict[str, Any] = Field(description="vitals, MAS, signs (no internals in assessment)")
    messages: list[Any]
    actions: list[Any]


class TrainingAction(Open):
    at_h: float
    action: str
    params: dict[str, Any]


class Debrief(Open):
    scenario: str
    title: str
    mode: str
    trainee: str | None
    score: float
    points: int
    max_points: int
    mastery: bool
    mastery_fraction: float
    missed: list[Any]
    critical_missed: list[Any]
    items: list[Any]
    actions: list[Any]
    timeline: list[Any]
    debrief: list[Any]


class CalibrationJob(Open):
    run_id: int
    procedure: str
    state: str = Field(description="running, finished, failed or cancelled")
    fraction: float | None = None
    eta_s: float | None = None
    message: str | None = None


class CalibrationInForce(Open):
    ul_per_step: float = Field(description="what delivery, the flow monitor and forecasts use")
    ul_per_step_nominal: float
    volume_version: int | None
    flow_sensor_scale: float
    flow_sensor_offset_ul_per_min: float
    flow_sensor_version: int | None


class CalibrationOverview(Open):
    procedures: list[dict[str, Any]] = Field(description="each procedure and its parameters")
    in_force: CalibrationInForce
    job: CalibrationJob | None = Field(description="the run going on, or the last")


class CalibrationRunRow(Open):
    id: int
    procedure: str
    state: str
    role: str | None
    started_at_utc: str
    finished_at_utc: str | None
    message: str | None


class CalibrationStarted(Open):
    run_id: int
    procedure: str
    state: Literal["running"]


class CalibrationVersion(Open):
    kind: Literal["volume", "flow_sensor"]
    version: int
    value: dict[str, Any] | None = Field(description="null: back to the nominal values")
