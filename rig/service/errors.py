"""One error shape for every refusal of the API, and the status codes it uses.

Every error answer is ``{"detail": [{"field": ..., "message": ..., "allowed": ...}, ...]}``: one
entry per problem, naming the field (a dotted path into the body, a query or path parameter, a
header such as ``X-Session``, or ``body``, ``state``, ``storage``), what is wrong, and what is
allowed when that can be said in a few words (else null). The input itself is never echoed back.

Status codes:

- 400: the body is not JSON (not UTF-8, malformed, nested too deep);
- 401: no valid access token or session, or a wrong PIN;
- 403: the session's role may not do this;
- 404: the alarm (or path) does not exist;
- 409: the request is well-formed, but the rig's state or settings refuse it (drug library
  limits, the reservoir, the bench, an active alarm, a stale proposal);
- 413: the body is larger than the limit;
- 422: the request breaks the schema (the schema states what is allowed);
- 429: the role is locked after repeated wrong PINs;
- 507: the books cannot be written: nothing was changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rig.service.books import StorageError

MAX_MESSAGE_CHARS = 300
MAX_FIELD_PART = 40
"""Longer messages are cut: an error never carries a large piece of what was sent."""


class Problem(BaseModel):
    """One thing wrong with a request."""

    field: str = Field(description="what was wrong: a body path (a.b.c), parameter or header")
    message: str = Field(description="what is wrong with it")
    allowed: str | None = Field(default=None, description="what is allowed, when known")


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    detail: list[Problem]


STATUS_MEANINGS: dict[int, str] = {
    400: "the body is not JSON: not UTF-8, malformed or nested too deep",
    401: "no valid access token (Authorization: Bearer) or session (X-Session), or a wrong PIN",
    403: "the session's role may not do this",
    404: "not found",
    409: "well-formed, but the rig's state or settings refuse it; nothing was changed",
    413: "the body is larger than the limit",
    422: "the request breaks the schema; nothing was changed",
    429: "the role is locked after repeated wrong PINs",
    507: "the books cannot be written; nothing was changed",
}


# Status codes answered by (nearly) every operation of a kind, for ``responses(...)``.
ANY = (401,)
"""Any request: a wrong or missing access token."""
BODY = (400, 401, 413, 422)
"""An operation with a body: not JSON, too large, breaks the schema."""
SESSION = (401, 403)
CHANGE = (*SESSION, 507)
"""A change: a session whose role permits it, and books that can be written."""


def responses(*codes: int, ok: Any = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` declaring each error status with the error body, and the
    successful answer's body *ok* (a model, or ``list[model]``) when given."""
    declared: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": STATUS_MEANINGS[code]} for code in sorted(codes)
    }
    if ok is not None:
        declared[200] = {"model": ok, "description": "Successful Response"}
    return declared


def _cut(text: str) -> str:
    text = str(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def problem(field: str, message: str, allowed: str | None = None) -> dict[str, Any]:
    return {"field": _cut(field), "message": _cut(message), "allowed": allowed and _cut(allowed)}


def body(*problems: dict[str, Any]) -> dict[str, Any]:
    return {"detail": list(problems)}


def refuse(status: int, field: str, message: str, allowed: str | None = None) -> HTTPException:
    """An HTTPException carrying one problem (raise it)."""
    return HTTPException(status, [problem(field, message, allowed)])


_LONG_QUOTE = re.compile(r"'[^']{40,}'")
"""A quoted value this long in a message is what was sent: not repeated back."""
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]-]*")


def problems_from_text(text: str) -> list[dict[str, Any]]:
    """The service's own messages, ``field: what is wrong`` (one per line), as problems:
    leading identifier-like segments form the field (``program: steps: ...`` → program.steps)."""
    problems = []
    for line in str(text).splitlines() or [""]:
        parts = line.split(": ")
        fields = []
        while len(parts) > 1 and _FIELD.fullmatch(parts[0]):
            fields.append(parts.pop(0))
        message = ": ".join(parts)
        problems.append(problem(".".join(fields) or "request", message or line))
    return problems


_TYPE_ALLOWED = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "a list",
    "tuple_type": "a list",
    "finite_number": "a finite number",
}
_BOUNDS = (("gt", "> {}"), ("ge", "≥ {}"), ("lt", "< {}"), ("le", "≤ {}"))


def _allowed(error: Mapping[str, Any]) -> str | None:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind in _TYPE_ALLOWED:
        return _TYPE_ALLOWED[kind]
    if kind in ("literal_error", "enum"):
        return f"one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"one of {ctx.get('expected_tags')}"
    bounds = [template.format(ctx[key]) for key, template in _BOUNDS if key in ctx]
    if bounds:
        return " and ".join(bounds)
    if kind in ("string_too_short", "too_short"):
        return f"at least {ctx.get('min_length')} {'characters' if 'string' in kind else 'items'}"
    if kind in ("string_too_long", "too_long"):
        return f"at most {ctx.get('max_length')} {'characters' if 'string' in kind else 'items'}"
    if kind == "string_pattern_mismatch":
        return f"text matching {ctx.get('pattern')}"
    if kind == "extra_forbidden":
        return "only the keys of the schema"
    return None


def validation_problems(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI validation errors as problems (their ``input`` is dropped)."""
    problems = []
    for error in errors:
        # A key is named back only when short: a long one is something sent, not a field.
        location = [
            str(part) if len(str(part)) <= MAX_FIELD_PART else f"(a key of {len(str(part))} chars)"
            for part in error.get("loc", ())
        ]
        if location and location[0] in ("body", "query", "path", "header"):
            source, location = location[0], location[1:]
        else:
            source = "body"
        field = ".".join(location) or source
        if source == "header":
            field = field.replace("_", "-").title()
        message = str(error.get("msg", "invalid"))
        kind = error.get("type", "")
        if kind == "extra_forbidden":
            message = "unknown key (not allowed here)"
        elif kind == "missing":
            message = "required" if source != "body" or location else "the body is required"
        elif kind == "union_tag_invalid":
            tag = str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
            field = f"{field}.{tag}" if tag else field
            message = "not one of the allowed values"
        message = _LONG_QUOTE.sub("'…'", message.removeprefix("Value error, "))
        problems.append(problem(field, message, _allowed(error)))
    return problems


def storage_problem(error: StorageError) -> dict[str, Any]:
    return problem("storage", str(error), "retry once the books can be written")


def json_error(status: int, *problems: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body(*problems), status_code=status)


def error_bytes(*problems: dict[str, Any]) -> bytes:
    return json.dumps(body(*problems), ensure_ascii=False).encode()


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app answers in the one shape, and the schema says so (FastAPI's own 422
    model, wherever it adds one, is replaced by :class:`ErrorBody`)."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build_schema()
            text = json.dumps(schema).replace(
                '"#/components/schemas/HTTPValidationError"', '"#/components/schemas/ErrorBody"'
            )
            schema = json.loads(text)
            components = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return json_error(422, *validation_problems(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        detail = error.detail
        headers = dict(error.headers or {})
        if isinstance(detail, list) and all(isinstance(item, dict) for item in detail):
            problems = detail
        elif error.status_code == 405:
            # Every method of the path (Starlette names only the first route's).
            methods = sorted(
                {
                    method
                    for route in app.routes
                    if getattr(route, "path_regex", None) is not None
                    and route.path_regex.match(request.url.path)
                    for method in getattr(route, "methods", None) or ()
                }
            )
            headers["Allow"] = ", ".join(methods)
            problems = [
                problem("method", f"{request.method} is not allowed here", headers["Allow"])
            ]
        else:
            field = {404: "path"}.get(error.status_code, "request")
            problems = [problem(field, str(detail))]
        return JSONResponse(body(*problems), status_code=error.status_code, headers=headers)

    @app.exception_handler(StorageError)
    async def storage_error(_request: Request, error: StorageError) -> JSONResponse:
        return json_error(507, storage_problem(error))
