"""The rig service's HTTP and WebSocket API (FastAPI); the OpenAPI schema is at /openapi.json.

Reading is open to every client allowed to connect; every state-changing call needs a session
(``X-Session`` header from ``POST /api/login``) whose role permits it, and is written to the audit
log with that role and its outcome. Listening beyond loopback also needs the access token
(``Authorization: Bearer …``) on every request. Client mistakes answer 4xx with a message naming
the field; nothing is changed by a rejected request.
"""

import asyncio
import contextlib
import dataclasses
import hmac
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.websockets import WebSocketDisconnect

from hal.config import Fraction, StrictModel
from hal.sim.bench import LeakFraction
from rig.common.inputs import InputError
from rig.service.auth import (
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
from rig.service.loop import RigService, StateConflict
from rig.therapy.engine import ProposalError
from rig.therapy.programs import Program

TELEMETRY_PERIOD_S = 0.2
SQLITE_MAX_INTEGER = 2**63 - 1


def _token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; header text may hold any character (compared as UTF-8 bytes)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _json_safe(value: Any) -> Any:
    """*value* with non-finite floats (``NaN``, ``Infinity`` in a request body) as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


class LoginRequest(StrictModel):
    role: Literal["trainee", "clinician", "engineer"]
    pin: str = Field(description="4 to 8 digits")


class ProposeRequest(StrictModel):
    program: Program


class ConfirmRequest(StrictModel):
    proposal_id: str = Field(min_length=1, max_length=64)
    accept_warnings: bool = False


class SilenceRequest(StrictModel):
    duration_s: Annotated[float, Field(gt=0, le=120, allow_inf_nan=False)] = 120.0


class WithdrawnRequest(StrictModel):
    withdrawn_ml: Annotated[float, Field(ge=0, le=40, allow_inf_nan=False)]


class FillRequest(StrictModel):
    volume_ml: Annotated[float, Field(gt=0, le=40, allow_inf_nan=False)]
    concentration_ug_per_ml: Annotated[float, Field(gt=0, le=2000, allow_inf_nan=False)]


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


def create_app(
    service: RigService, auth: Authenticator, *, access_token: str | None = None
) -> FastAPI:
    """The API over one running :class:`RigService`."""
    app = FastAPI(
        title="ITB pump training rig",
        description="Training device — not for clinical use.",
        version="1.0",
    )

    def check_access(authorization: Annotated[str | None, Header()] = None) -> None:
        if access_token is None:
            return
        if not _token_matches(authorization, f"Bearer {access_token}"):
            raise HTTPException(401, "Authorization: a valid access token is required")

    def session_role(
        x_session: Annotated[str | None, Header()] = None,
    ) -> Role:
        if not x_session:
            raise HTTPException(401, "X-Session: log in first (POST /api/login)")
        try:
            return auth.role_for(x_session)
        except UnknownSession:
            raise HTTPException(
                401, "X-Session: unknown or expired session; log in again"
            ) from None

    def require(action: Action):
        def dependency(request: Request, role: Annotated[Role, Depends(session_role)]) -> Role:
            try:
                if not permits(role, action):
                    raise NotPermitted(role, action)
            except NotPermitted as error:
                service.store.add_audit(
                    request.url.path, role=role.value, request={}, outcome="rejected",
                    detail=str(error),
                )  # fmt: skip
                raise HTTPException(403, str(error)) from None
            return role

        return dependency

    def audited(
        role: Role,
        action: str,
        request: Any,
        call: Callable[[], Any],
        refused: Callable[[Any], str | None] = lambda _result: None,
    ) -> Any:
        """Run *call* and audit it: rejected with the message when it raises (the HTTP error
        follows) or when *refused* finds a refusal in its answer, else ok."""
        body = request.model_dump(mode="json") if hasattr(request, "model_dump") else request
        try:
            result = call()
        except (InputError, ValueError, KeyError) as error:
            status = 409 if isinstance(error, (StateConflict, ProposalError)) else 422
            message = str(error)
            if isinstance(error, KeyError):
                status, message = 404, f"not found: {error.args[0]}"
            service.store.add_audit(
                action, role=role.value, request=body, outcome="rejected", detail=message
            )
            raise HTTPException(status, message) from None
        refusal = refused(result)
        service.store.add_audit(
            action,
            role=role.value,
            request=body,
            outcome="ok" if refusal is None else "rejected",
            detail=refusal or "",
        )
        return result

    deps = [Depends(check_access)]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # The errors echo the input, which may hold NaN or Infinity (Python's JSON reads them).
        detail = _json_safe(jsonable_encoder(error.errors()))
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StorageError)
    async def storage_error(_request: Request, error: StorageError) -> JSONResponse:
        return JSONResponse({"detail": f"storage: {error}"}, status_code=507)

    @app.get("/api/status", dependencies=deps)
    def get_status() -> dict[str, Any]:
        return service.status()

    @app.post("/api/login", dependencies=deps)
    def login(body: LoginRequest) -> dict[str, Any]:
        try:
            token = auth.login(body.role, body.pin)
        except PinFormatError as error:
            raise HTTPException(422, f"pin: {error}") from None
        except BadPin as error:
            raise HTTPException(401, f"pin: {error}") from None
        except RoleLocked as error:
            raise HTTPException(429, f"role: {error}") from None
        return {"token": token, "role": body.role}

    @app.post("/api/logout", dependencies=deps)
    def logout(x_session: Annotated[str | None, Header()] = None) -> dict[str, bool]:
        if x_session:
            with contextlib.suppress(UnknownSession):
                auth.logout(x_session)
        return {"ok": True}

    @app.post("/api/program/propose", dependencies=deps)
    def propose(
        body: ProposeRequest, role: Annotated[Role, Depends(require(Action.PROGRAM))]
    ) -> dict[str, Any]:
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

    @app.post("/api/program/confirm", dependencies=deps)
    def confirm(
        body: ConfirmRequest, role: Annotated[Role, Depends(require(Action.PROGRAM))]
    ) -> dict[str, Any]:
        audited(
            role,
            "program.confirm",
            body,
            lambda: service.confirm(body.proposal_id, body.accept_warnings, role.value),
        )
        return service.status()

    @app.get("/api/program/history", dependencies=deps)
    def program_history() -> list[dict[str, Any]]:
        return service.store.program_history()

    @app.post("/api/start", dependencies=deps)
    def start(role: Annotated[Role, Depends(require(Action.START_STOP))]) -> dict[str, Any]:
        audited(role, "start", {}, lambda: service.start_delivery(role.value))
        return service.status()

    @app.post("/api/stop", dependencies=deps)
    def stop(role: Annotated[Role, Depends(require(Action.START_STOP))]) -> dict[str, Any]:
        audited(role, "stop", {}, lambda: service.stop_delivery(role.value))
        return service.status()

    @app.post("/api/recovery/resume", dependencies=deps)
    def resume(role: Annotated[Role, Depends(require(Action.START_STOP))]) -> dict[str, Any]:
        audited(role, "recovery.resume", {}, lambda: service.resume_after_recovery(role.value))
        return service.status()

    @app.post("/api/bolus/patient", dependencies=deps)
    def patient_bolus(
        role: Annotated[Role, Depends(require(Action.PATIENT_BOLUS))],
    ) -> dict[str, Any]:
        return audited(
            role,
            "bolus.patient",
            {},
            lambda: service.request_patient_bolus(role.value),
            refused=lambda decision: None if decision["granted"] else decision["message"],
        )

    @app.get("/api/alarms", dependencies=deps)
    def alarms() -> dict[str, Any]:
        status = service.status()
        return {
            "active": status["alarms"],
            "silence_remaining_s": status["silence_remaining_s"],
            "history": service.store.alarm_history(50),
        }

    @app.post("/api/alarms/{alarm_id}/acknowledge", dependencies=deps)
    def acknowledge(
        alarm_id: int, role: Annotated[Role, Depends(require(Action.ALARM_ACKNOWLEDGE))]
    ) -> dict[str, Any]:
        def acknowledge_one() -> list[int]:
            try:
                return service.acknowledge(alarm_id, role.value)
            except KeyError:
                raise KeyError(f"alarm_id: {alarm_id} is not an active alarm") from None

        ids = audited(role, "alarms.acknowledge", {"alarm_id": alarm_id}, acknowledge_one)
        return {"acknowledged": ids}

    @app.post("/api/alarms/acknowledge-all", dependencies=deps)
    def acknowledge_all(
        role: Annotated[Role, Depends(require(Action.ALARM_ACKNOWLEDGE))],
    ) -> dict[str, Any]:
        ids = audited(
            role, "alarms.acknowledge_all", {}, lambda: service.acknowledge(None, role.value)
        )
        return {"acknowledged": ids}

    @app.post("/api/alarms/silence", dependencies=deps)
    def silence(
        body: SilenceRequest, role: Annotated[Role, Depends(require(Action.ALARM_SILENCE))]
    ) -> dict[str, Any]:
        granted = audited(
            role, "alarms.silence", body, lambda: service.silence(body.duration_s, role.value)
        )
        return {"silenced_s": granted}

    @app.get("/api/events", dependencies=deps)
    def events(
        since_id: Annotated[int | None, Field(ge=0, le=SQLITE_MAX_INTEGER)] = None,
        kind: str | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        return service.store.events(since_id=since_id, kind=kind, limit=limit)

    @app.get("/api/boluses", dependencies=deps)
    def boluses(
        state: Literal["pending", "active", "done", "cancelled", "interrupted"] | None = None,
        limit: Annotated[int, Field(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Boluses on the books, newest first: kind, state, volume and delivered volume."""
        return service.store.boluses(state=state, limit=limit)

    @app.get("/api/bench", dependencies=deps)
    def bench() -> dict[str, Any]:
        return service.bench_readings()

    @app.get("/api/selftest", dependencies=deps)
    def selftest() -> dict[str, Any]:
        """The power-on self-test of this service start: passed, and each check's result."""
        if service.self_test is None:
            raise HTTPException(404, "not found: no self-test ran at this service start")
        return service.self_test.to_dict()

    @app.get("/api/history/daily", dependencies=deps)
    def daily() -> list[dict[str, float]]:
        return service.patient_day_volumes()

    @app.post("/api/refill/withdrawn", dependencies=deps)
    def withdrawn(
        body: WithdrawnRequest, role: Annotated[Role, Depends(require(Action.REFILL))]
    ) -> dict[str, Any]:
        verdict = audited(
            role, "refill.withdrawn", body, lambda: service.refill_withdrawn(body.withdrawn_ml)
        )
        return verdict.model_dump(mode="json")

    @app.post("/api/refill/aspirate", dependencies=deps)
    def aspirate(role: Annotated[Role, Depends(require(Action.REFILL))]) -> dict[str, Any]:
        """With a refill valve: empty the reservoir to waste; the status's refill tells when."""
        return audited(role, "refill.aspirate", {}, lambda: service.refill_aspirate(role.value))

    @app.post("/api/refill/fill", dependencies=deps)
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

    @app.put("/api/settings", dependencies=deps)
    def settings(
        body: SettingsRequest, role: Annotated[Role, Depends(require(Action.PROGRAM))]
    ) -> dict[str, Any]:
        audited(role, "settings", body, lambda: service.set_time_compression(body.time_compression))
        return service.status()

    @app.post("/api/faults", dependencies=deps)
    def faults(
        body: FaultRequest, role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))]
    ) -> dict[str, Any]:
        return audited(role, "faults", body, lambda: service.inject_faults(body))

    @app.delete("/api/faults", dependencies=deps)
    def clear_faults(
        role: Annotated[Role, Depends(require(Action.FAULT_INJECTION))],
    ) -> dict[str, Any]:
        return audited(role, "faults.clear", {}, service.clear_faults)

    @app.websocket("/api/telemetry")
    async def telemetry(websocket: WebSocket) -> None:
        if access_token is not None:
            header = websocket.headers.get("authorization")
            if not _token_matches(header, f"Bearer {access_token}"):
                await websocket.close(code=1008)
                return
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

    return app
