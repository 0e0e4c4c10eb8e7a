"""The rig service's HTTP and WebSocket API (FastAPI); the OpenAPI schema is at /openapi.json.

Reading is open to every client allowed to connect; every state-changing call needs a session
(``X-Session`` header from ``POST /api/login``) whose role permits it, and is written to the audit
log with that role and its outcome. With an access token configured, every request needs it
(``Authorization: Bearer …``), checked before its body is read (:mod:`rig.service.guard`).

A state change is written first: the change, its event and its audit entry are one transaction of
the books, and nothing of it is applied (engine, motor, bench) unless that transaction commits. A
request answered with an error has changed nothing. Errors have one shape everywhere
(:mod:`rig.service.errors`), and the schema declares every status each operation can answer.
"""

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import (
    Body,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    WebSocket,
)
from fastapi.routing import APIRoute
from pydantic import AfterValidator, Field
from starlette.websockets import WebSocketDisconnect

from hal.config import Fraction, StrictModel
from hal.sim.bench import LeakFraction
from rig.common.inputs import InputError
from rig.service.api_bodies import (
    Acknowledged,
    AlarmsBody,
    Aspirating,
    BenchBody,
    BolusDecision,
    BolusRow,
    DayVolume,
    EventRow,
    FaultsBody,
    FillBody,
    LoggedIn,
    LoggedOut,
    LoopBody,
    PinChanged,
    ProgramRow,
    Proposal,
    RefillVerdict,
    SelfTestBody,
    Silenced,
    StatusBody,
)
from rig.service.api_calibration import add_calibration_routes
from rig.service.api_training import add_training_routes
from rig.service.auth import (
    DEFAULT_PINS,
    Action,
    Authenticator,
    BadPin,
    NotPermitted,
    PinFormatError,
    Role,
    RoleLocked,
    UnknownSession,
    permits,
)
from rig.service.books import StorageError
from rig.service.bridge import NoBridgeRequest
from rig.service.errors import (
    ANY,
    BODY,
    CHANGE,
    install_error_handlers,
    problems_from_text,
    refuse,
    responses,
)
from rig.service.guard import MAX_BODY_BYTES, RequestGuard
from rig.service.loop import RigService
from rig.therapy.drugs import load_program
from rig.therapy.programs import Program

TELEMETRY_PERIOD_S = 0.2
SQLITE_MAX_INTEGER = 2**63 - 1
PIN_PATTERN = r"^[0-9]{4,8}$"
FACTORY_PINS = frozenset(DEFAULT_PINS.values())
EXAMPLE_PROGRAMS = ("continuous", "flex", "patient_bolus", "priming_bolus", "single_bolus")


def _not_a_factory_pin(pin: str) -> str:
    if pin in FACTORY_PINS:
        raise ValueError(
            f"the factory PINs ({', '.join(sorted(FACTORY_PINS))}) are known to everyone; "
            "choose another"
        )
    return pin


Pin = Annotated[str, Field(pattern=PIN_PATTERN, description="4 to 8 digits (0-9)")]
NewPin = Annotated[
    str,
    Field(
        pattern=PIN_PATTERN,
        description="4 to 8 digits (0-9), not a factory PIN (1111, 2222, 3333)",
        json_schema_extra={"not": {"enum": sorted(FACTORY_PINS)}},
    ),
    AfterValidator(_not_a_factory_pin),
]


class LoginRequest(StrictModel):
    role: Literal["trainee", "clinician", "engineer"]
    pin: Pin


class PinChangeRequest(StrictModel):
    """A new PIN for a role: by the role itself with its current PIN, or by the engineer."""

    new_pin: NewPin
    old_pin: Pin | None = Field(
        default=None, description="the role's current PIN (not needed when the engineer sets it)"
    )


class ProposeRequest(StrictModel):
    program: Program


class ConfirmRequest(StrictModel):
    proposal_id: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="the proposal_id that propose answered"
    )
    accept_warnings: bool = False


class SilenceRequest(StrictModel):
    duration_s: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 120.0


class SettingsRequest(StrictModel):
    time_compression: Annotated[float, Field(ge=1, le=100_000, allow_inf_nan=False)]


class FaultRequest(StrictModel):
    """Faults of the simulated bench (omitted fields keep their value)."""

    occlusion_fraction: Fraction | None = None
    leak_fraction: LeakFraction | None = None
    motor_stalled: bool | None = None
    slip_fraction: Fraction | None = None
    free_flow_ul_per_min: Annotated[float, Field(ge=0, le=5000, allow_inf_nan=False)] | None = None
    spurious_steps_per_s: Annotated[float, Field(ge=0, le=20000, allow_inf_nan=False)] | None = None
    sensor_bias_ul_per_min: (
        Annotated[float, Field(ge=-1000, le=1000, allow_inf_nan=False)] | None
    ) = None
    sensor_dropout: bool | None = None
    air_bubble_ul: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] | None = None
    short_fill_fraction: Fraction | None = None
    """Share of the next refills that is air (the air reaches the line when delivery resumes)."""
    supply_concentration_ug_per_ml: (
        Annotated[float, Field(gt=0, le=100_000, allow_inf_nan=False)] | None
    ) = None
    """What the supply really holds, whatever the refill says (a wrong-concentration refill)."""


def _program_examples() -> dict[str, dict[str, Any]]:
    """The example programs shipped in examples/programs, as propose bodies (when present)."""
    from pathlib import Path as FilePath

    folder = FilePath(__file__).resolve().parents[2] / "examples" / "programs"
    examples = {}
    for name in EXAMPLE_PROGRAMS:
        path = folder / f"{name}.toml"
        if path.is_file():
            program = load_program(path).model_dump(mode="json")
            examples[name] = {"summary": f"{name} example", "value": {"program": program}}
    return examples


class ParsedJsonRoute(APIRoute):
    """Routes whose request body the guard has already parsed once (never twice)."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def parsed_once(request: Request) -> Any:
            parsed = request.scope.get(PARSED_BODY_KEY, _UNPARSED)
            if parsed is not _UNPARSED:
                request._json = parsed  # what Request.json() returns
            return await handler(request)

        return parsed_once


PARSED_BODY_KEY = "itbrig.parsed_body"
_UNPARSED = object()


def create_app(
    service: RigService,
    auth: Authenticator,
    *,
    access_token: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The API over one running :class:`RigService`."""
    app = FastAPI(
        title="ITB pump training rig",
        description="Training device — not for clinical use.",
        version="1.0",
    )
    app.router.route_class = ParsedJsonRoute
    app.add_middleware(
        RequestGuard,
        access_token=access_token,
        max_body_bytes=max_body_bytes,
        parsed_body_key=PARSED_BODY_KEY,
    )
    install_error_handlers(app)
    store = service.store
    capacity_ml = service.engine.state.reservoir.capacity_ml

    class WithdrawnRequest(StrictModel):
        withdrawn_ml: Annotated[
            float,
            Field(
                ge=0,
                le=capacity_ml,
                allow_inf_nan=False,
                description=f"volume withdrawn from the reservoir (this rig's holds "
                f"{capacity_ml:g} mL)",
            ),
        ]

    class FillRequest(StrictModel):
        volume_ml: Annotated[
            float,
            Field(
                gt=0,
                le=capacity_ml,
                allow_inf_nan=False,
                description=f"volume filled (up to this rig's reservoir, {capacity_ml:g} mL)",
            ),
        ]
        concentration_ug_per_ml: Annotated[
            float,
            Field(
                gt=0,
                le=2000,
                allow_inf_nan=False,
                description="one of the drug library's concentrations (baclofen: 50, 500, "
                "1000, 2000)",
                examples=[500.0],
            ),
        ]

    def record_rejection(role: str | None, action: str, request: Any, detail: str) -> None:
        """A refused request in the audit log (kept to write later if the books cannot)."""
        service.records.write(
            f"audit the refused {action}",
            lambda: store.add_audit(
                action, role=role, request=request, outcome="rejected", detail=detail[:500]
            ),
        )

    def session_role(x_session: Annotated[str | None, Header()] = None) -> Role:
        if not x_session:
            raise refuse(401, "X-Session", "log in first (POST /api/login)", "a session token")
        try:
            return auth.role_for(x_session)
        except UnknownSession:
            raise refuse(
                401, "X-Session", "unknown or expired session; log in again", "a live session"
            ) from None

    def require(action: Action):
        def dependency(request: Request, role: Annotated[Role, Depends(session_role)]) -> Role:
            if not permits(role, action):
                message = str(NotPermitted(role, action))
                record_rejection(role.value, request.url.path, {}, message)
                allowed = ", ".join(r.value for r in Role if permits(r, action))
                raise refuse(403, "role", message, allowed)
            return role

        return dependency

    def audited(
        role: Role,
        action: str,
        request: Any,
        call: Callable[[], Any],
        refused: Callable[[Any], str | None] = lambda _result: None,
    ) -> Any:
        """Run *call* as one change with its audit entry: both written, or neither and an error.

        A refusal is audited as rejected (written later if the books cannot take it now).
        """
        body = request.model_dump(mode="json") if hasattr(request, "model_dump") else request
        try:
            with service.transaction(action):
                result = call()
                refusal = refused(result)
                store.add_audit(
                    action,
                    role=role.value,
                    request=body,
                    outcome="ok" if refusal is None else "rejected",
                    detail=refusal or "",
                )
        except StorageError as error:
            record_rejection(role.value, action, body, f"storage: {error}")
            raise refuse(
                507, "storage", str(error), "retry once the books can be written"
            ) from None
        except (InputError, ValueError, KeyError) as error:
            status = 409
            message = str(error)
            if isinstance(error, KeyError):
                status, message = 404, str(error.args[0])
            record_rejection(role.value, action, body, message)
            raise HTTPException(status, problems_from_text(message)) from None
        return result

    def security_status() -> dict[str, Any]:
        factory = auth.factory_pin_roles()
        return {
            "factory_pins": factory,
            "warning": (
                f"factory PINs in use for {', '.join(factory)}: change them "
                "(itbrig pin change --role ROLE)"
                if factory
                else None
            ),
            "access_token_required": access_token is not None,
        }

    def full_status() -> dict[str, Any]:
        status = service.status()
        status["security"] = security_status()
        return status

    propose_examples = _program_examples()

    @app.get("/api/status", response_model=None, responses=responses(*ANY, ok=StatusBody))
    def get_status() -> dict[str, Any]:
        """Everything a display needs (``loop``: the delivery loop's timing; ``storage``:
        whether the books can be written; ``security``: factory PINs in use)."""
        return full_status()

    @app.post("/api/login", response_model=None, responses=responses(*BODY, 429, ok=LoggedIn))
    def login(body: LoginRequest) -> dict[str, Any]:
        """A session for a role; wrong PINs and lockouts are audited."""
        request = {"role": body.role}
        try:
            token = auth.login(body.role, body.pin)
        except PinFormatError as error:
            record_rejection(body.role, "login", request, f"pin: {error}")
            raise refuse(422, "pin", str(error), "4 to 8 digits") from None
        except BadPin as error:
            record_rejection(body.role, "login", request, f"pin: {error}")
            raise refuse(401, "pin", str(error)) from None
        except RoleLocked as error:
            record_rejection(body.role, "login", request, f"role: {error}")
            raise refuse(429, "role", str(error)) from None
        service.records.write(
            "audit the login",
            lambda: store.add_audit("login", role=body.role, request=request, outcome="ok"),
        )
        return {"token": token, "role": body.role}

    @app.post("/api/logout", response_model=None, responses=responses(*ANY, ok=LoggedOut))
    def logout(x_session: Annotated[str | None, Header()] = None) -> dict[str, bool]:
        if x_session:
            with contextlib.suppress(UnknownSession):
                auth.logout(x_session)
        return {"ok": True}

    @app.put(
        "/api/pins/{role}",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 429, ok=PinChanged),
    )
    def change_pin(
        role: Annotated[Literal["trainee", "clinician", "engineer"], Path()],
        body: PinChangeRequest,
        caller: Annotated[Role, Depends(session_role)],
    ) -> dict[str, Any]:
        """A role changes its own PIN with its current one; the engineer may set any role's."""
        target = Role(role)
        request = {"role": role}
        if not permits(caller, Action.MANAGE_PINS):
            if caller != target:
                message = f"{caller.value} may change only its own PIN (the engineer may set any)"
                record_rejection(caller.value, "pins.change", request, message)
                raise refuse(403, "role", message, caller.value)
            if body.old_pin is None:
                record_rejection(caller.value, "pins.change", request, "old_pin: required")
                raise refuse(401, "old_pin", "your current PIN is required", "4 to 8 digits")
            try:
                auth.check_pin(target, body.old_pin)
            except BadPin as error:
                record_rejection(caller.value, "pins.change", request, f"old_pin: {error}")
                raise refuse(401, "old_pin", str(error)) from None
            except RoleLocked as error:
                record_rejection(caller.value, "pins.change", request, f"role: {error}")
                raise refuse(429, "role", str(error)) from None
        audited(caller, "pins.change", request, lambda: auth.set_pin(target, body.new_pin))
        return {"role": role, "changed": True, "security": security_status()}

    @app.post(
        "/api/program/propose",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=Proposal),
    )
    def propose(
        body: Annotated[ProposeRequest, Body(openapi_examples=propose_examples)],
        role: Annotated[Role, Depends(require(Action.PROGRAM))],
    ) -> dict[str, Any]:
        """Old and new settings side by side; nothing changes until confirmed."""

        def propose_checked() -> Any:
            try:
                return service.propose(body.program)
            except ArithmeticError as error:  # allowed by the schema, yet too extreme to plan
                raise InputError(
                    f"program: values too extreme to plan ({error}); use realistic doses, "
                    "durations and rates"
                ) from None

        proposal = audited(role, "program.propose", body, propose_checked)
        return proposal.model_dump(mode="json")

    @app.post(
        "/api/program/confirm",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=StatusBody),
    )
    def confirm(
        body: ConfirmRequest, role: Annotated[Role, Depends(require(Action.PROGRAM))]
    ) -> dict[str, Any]:
        audited(
            role,
            "program.confirm",
            body,
            lambda: service.confirm(body.proposal_id, body.accept_warnings, role.value),
        )
        return full_status()

    @app.get(
        "/api/program/history",
        response_model=None,
        responses=responses(*ANY, 507, ok=list[ProgramRow]),
    )
    def program_history() -> list[dict[str, Any]]:
        return store.program_history()

    @app.post("/api/start", response_model=None, responses=responses(*CHANGE, 409, ok=StatusBody))
    def start(role: Annotated[Role, Depends(require(Action.START_STOP))]) -> dict[str, Any]:
        audited(role, "start", {}, lambda: service.start_delivery(role.value))
        return full_status()

    @app.post("/api/stop", response_model=None, responses=responses(*CHANGE, ok=StatusBody))
    def stop(role: Annotated[Role, Depends(require(Action.START_STOP))]) -> dict[str, Any]:
        audited(role, "stop", {}, lambda: service.stop_delivery(role.value))
        return full_status()

    @app.post(
        "/api/recovery/resume",
        response_model=None,
        responses=responses(*CHANGE, 409, ok=StatusBody),
    )
    def resume(role: Annotated[Role, Depends(require(Action.START_STOP))]) -> dict[str, Any]:
        audited(role, "recovery.resume", {}, lambda: service.resume_after_recovery(role.value))
        return full_status()

    @app.post(
        "/api/bolus/patient", response_model=None, responses=responses(401, 507, ok=BolusDecision)
    )
    def patient_bolus(
        role: Annotated[Role, Depends(require(Action.PATIENT_BOLUS))],
    ) -> dict[str, Any]:
        """The patient's button: granted or refused (200 either way, with the reason); every
        request is on the books (event log, audit) and every grant in the bolus table."""
        return audited(
            role,
            "bolus.patient",
            {},
            lambda: service.request_patient_bolus(role.value),
            refused=lambda decision: None if decision["granted"] else decision["message"],
        )

    @app.get("/api/alarms", response_model=None, responses=responses(*ANY, 507, ok=AlarmsBody))
    def alarms() -> dict[str, Any]:
        return {
            "active": service.alarms.active_alarms(),
            "silence_remaining_s": service.alarms.silence_remaining_s(),
            "history": store.alarm_history(50),
        }

    @app.post(
        "/api/alarms/{alarm_id}/acknowledge",
        response_model=None,
        responses=responses(*CHANGE, 404, 422, ok=Acknowledged),
    )
    def acknowledge(
        alarm_id: Annotated[int, Path(ge=1, le=SQLITE_MAX_INTEGER)],
        role: Annotated[Role, Depends(require(Action.ALARM_ACKNOWLEDGE))],
    ) -> dict[str, Any]:
        def acknowledge_one() -> list[int]:
            try:
                return service.acknowledge(alarm_id, role.value)
            except KeyError:
                raise KeyError(f"alarm_id: {alarm_id} is not an active alarm") from None

        ids = audited(role, "alarms.acknowledge", {"alarm_id": alarm_id}, acknowledge_one)
        return {"acknowledged": ids}

    @app.post(
        "/api/alarms/acknowledge-all",
        response_model=None,
        responses=responses(*CHANGE, ok=Acknowledged),
    )
    def acknowledge_all(
        role: Annotated[Role, Depends(require(Action.ALARM_ACKNOWLEDGE))],
    ) -> dict[str, Any]:
        ids = audited(
            role, "alarms.acknowledge_all", {}, lambda: service.acknowledge(None, role.value)
        )
        return {"acknowledged": ids}

    @app.post(
        "/api/alarms/silence", response_model=None, responses=responses(*BODY, *CHANGE, ok=Silenced)
    )
    def silence(
        body: SilenceRequest, role: Annotated[Role, Depends(require(Action.ALARM_SILENCE))]
    ) -> dict[str, Any]:
        if service.storage_ok:
            granted = audited(
                role, "alarms.silence", body, lambda: service.silence(body.duration_s, role.value)
            )
        else:  # the one change allowed while the books cannot be written: its records wait
            granted = service.silence_while_unwritable(body.duration_s, role.value)
            service.records.write(
                "audit the silence",
                lambda: store.add_audit(
                    "alarms.silence", role=role.value, request=body.model_dump(mode="json"),
                    outcome="ok", detail="while the books could not be written",
                ),
            )  # fmt: skip
        return {"silenced_s": granted}

    @app.get(
        "/api/events", response_model=None, responses=responses(*ANY, 422, 507, ok=list[EventRow])
    )
    def events(
        since_id: Annotated[int | None, Query(ge=0, le=SQLITE_MAX_INTEGER)] = None,
        kind: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return store.events(since_id=since_id, kind=kind, limit=limit)

    @app.get(
        "/api/boluses", response_model=None, responses=responses(*ANY, 422, 507, ok=list[BolusRow])
    )
    def boluses(
        state: Literal["pending", "active", "done", "cancelled", "interrupted"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Boluses on the books, newest first: kind, state, volume and delivered volume."""
        return store.boluses(state=state, limit=limit)

    @app.get("/api/bench", response_model=None, responses=responses(*ANY, ok=BenchBody))
    def bench() -> dict[str, Any]:
        return service.bench_readings()

    @app.get("/api/selftest", response_model=None, responses=responses(*ANY, 404, ok=SelfTestBody))
    def selftest() -> dict[str, Any]:
        """The power-on self-test of this service start: passed, and each check's result."""
        if service.self_test is None:
            raise HTTPException(
                404, problems_from_text("selftest: no self-test ran at this service start")
            )
        return service.self_test.to_dict()

    @app.get(
        "/api/history/daily",
        response_model=None,
        responses=responses(*ANY, 507, ok=list[DayVolume]),
    )
    def daily() -> list[dict[str, float]]:
        return service.patient_day_volumes()

    @app.post(
        "/api/refill/withdrawn",
        response_model=None,
        responses=responses(*BODY, *CHANGE, ok=RefillVerdict),
    )
    def withdrawn(
        body: WithdrawnRequest, role: Annotated[Role, Depends(require(Action.REFILL))]
    ) -> dict[str, Any]:
        verdict = audited(
            role,
            "refill.withdrawn",
            body,
            lambda: service.refill_withdrawn(body.withdrawn_ml, role.value),
        )
        return verdict.model_dump(mode="json")

    @app.post(
        "/api/refill/aspirate",
        response_model=None,
        responses=responses(*CHANGE, 409, ok=Aspirating),
    )
    def aspirate(role: Annotated[Role, Depends(require(Action.REFILL))]) -> dict[str, Any]:
        """With a refill valve: empty the reservoir to waste; the status's refill tells when."""
        return audited(role, "refill.aspirate", {}, lambda: service.refill_aspirate(role.value))

    @app.post(
        "/api/refill/fill",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=FillBody),
    )
    def fill(
        body: FillRequest, role: Annotated[Role, Depends(require(Action.REFILL))]
    ) -> dict[str, Any]:
        result = audited(
            role,
            "refill.fill",
            body,
            lambda: service.refill_fill(body.volume_ml, body.concentration_ug_per_ml, role.value),
        )
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in result.items()}

    @app.post(
        "/api/refill/no-bridge",
        response_model=None,
        responses=responses(*BODY, *CHANGE, 409, ok=StatusBody),
    )
    def no_bridge(
        body: NoBridgeRequest, role: Annotated[Role, Depends(require(Action.REFILL))]
    ) -> dict[str, Any]:
        """After a fill at a new concentration: start without a bridge bolus, the reason kept."""
        audited(
            role,
            "refill.no_bridge",
            body,
            lambda: service.record_no_bridge(body.reason, role.value),
        )
        return full_status()

    @app.put(
        "/api/settings", response_model=None, responses=responses(*BODY, *CHANGE, ok=StatusBody)
    )
    def settings(
        body: SettingsRequest, role: Annotated[Role, Depends(require(Action.PROGRAM))]
    ) -> dict[str, Any]:
        audited(
            role,
            "settings",
            body,
            lambda: service.set_time_compression(body.time_compression, role.value),
        )
        return full_status()

    @app.post(
        "/api/faults", response_model=None, responses=responses(*BODY, *CHANGE, 409, ok=FaultsBody)
    )
    def faults(
        body: FaultRequest, role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))]
    ) -> dict[str, Any]:
        return audited(role, "faults", body, lambda: service.inject_faults(body, role.value))

    @app.delete(
        "/api/faults", response_model=None, responses=responses(*CHANGE, 409, ok=FaultsBody)
    )
    def clear_faults(
        role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))],
    ) -> dict[str, Any]:
        return audited(role, "faults.clear", {}, lambda: service.clear_faults(role.value))

    @app.post(
        "/api/diagnostics/loop/reset",
        response_model=None,
        responses=responses(*CHANGE, ok=LoopBody),
    )
    def reset_loop(
        role: Annotated[Role, Depends(require(Action.CALIBRATION))],
    ) -> dict[str, Any]:
        """Restart the delivery loop's timing figures (``loop`` in the status)."""
        audited(role, "diagnostics.loop.reset", {}, service.reset_loop_stats)
        return service.loop_status()

    add_calibration_routes(app, service, require=require, audited=audited)

    @app.websocket("/api/telemetry")
    async def telemetry(websocket: WebSocket) -> None:
        # The access token, when one is set, was checked before the handshake (the guard).
        await websocket.accept()
        try:
            while True:
                message = dataclasses.asdict(service.telemetry)
                message["alarms"] = service.alarms.active_codes
                message["reservoir_ml"] = service.engine.state.reservoir.volume_ml
                await websocket.send_json(message)
                await asyncio.sleep(TELEMETRY_PERIOD_S)
        except (WebSocketDisconnect, RuntimeError):
            return

    add_training_routes(app, service, require, audited)
    return app
