"""The API's front door: access token and body checks before any request reaches the app.

An ASGI middleware, outermost, so that a hostile request costs the service as little as
possible and never holds the interpreter long enough to stall the delivery loop:

1. the access token (when the service has one) is checked first, from the headers alone: a
   request without it is answered 401 before a byte of its body is read; a telemetry WebSocket
   without it is refused the same way (HTTP 401, through the ASGI WebSocket denial response);
2. a declared ``Content-Length`` above :data:`MAX_BODY_BYTES` is answered 413 without reading
   the body; a body sent without one is read only up to the limit;
3. the body must be UTF-8 JSON nested at most :data:`MAX_JSON_DEPTH` deep (400 otherwise, naming
   what is wrong and where); parsed once here, the app is handed the result.

Every refusal has the API's one error shape (:mod:`rig.service.errors`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from rig.service.errors import error_bytes, problem

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024
"""The largest request body: a flex program with every weekday and 13 steps is under 6 KiB."""
MAX_JSON_DEPTH = 32
"""The deepest JSON nesting (a program nests at most 6 deep)."""
MAX_JSON_CONTAINERS = 1024
"""The most objects and lists in one body (a week of flex steps has about 120). Counted before
parsing, as brackets in the raw bytes: tens of thousands of tiny containers cost the parser and
the garbage collector long enough to hold up the delivery loop."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; header text may hold any character (compared as UTF-8 bytes)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether parsed JSON *value* nests deeper than *limit* (objects and lists count a level).

    A plain Python walk, stopping at the first level too deep: unlike one long C call it lets
    other threads (the delivery loop) run while it works.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def parse_json(
    body: bytes, max_depth: int = MAX_JSON_DEPTH, max_containers: int = MAX_JSON_CONTAINERS
) -> tuple[Any, dict[str, Any] | None]:
    """(*body* parsed as JSON, None), or (None, what is wrong with it)."""
    brackets = body.count(b"[") + body.count(b"{")  # an upper bound: strings may hold some
    if brackets > max_containers:
        return None, problem(
            "body",
            f"more than {max_containers} JSON objects and lists ({brackets} brackets)",
            f"at most {max_containers} objects and lists",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, problem(
            "body",
            f"not UTF-8: byte 0x{body[error.start]:02x} at offset {error.start} is not allowed",
            "JSON text in UTF-8",
        )
    depth_problem = problem(
        "body", f"JSON nested deeper than {max_depth} levels", f"at most {max_depth} levels"
    )
    try:
        parsed = json.loads(text)
    except RecursionError:
        return None, depth_problem
    except json.JSONDecodeError as error:
        return None, problem(
            "body",
            f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno} "
            f"(offset {error.pos})",
            "a JSON object",
        )
    if isinstance(parsed, dict | list) and (
        text.count("[") + text.count("{") > max_depth and nesting_exceeds(parsed, max_depth)
    ):
        return None, depth_problem
    return parsed, None


class RequestGuard:
    """ASGI middleware: access token, body size and JSON checks before the app sees a request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        access_token: str | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
        parsed_body_key: str | None = None,
    ) -> None:
        self.app = app
        self.parsed_body_key = parsed_body_key
        self._expected = None if access_token is None else f"Bearer {access_token}"
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth

    def _authorised(self, scope: Scope) -> bool:
        if self._expected is None:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                return token_matches(value.decode("latin-1"), self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket" and not self._authorised(scope):
            await self._deny_websocket(scope, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await self._answer(send, 401, self._token_problem())
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await self._answer(
                send, 400, problem("Content-Length", "not a whole number", "a byte count")
            )
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._answer(send, 413, self._size_problem(f"{declared} bytes declared"))
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await self._answer(send, 413, self._size_problem("more than that was sent"))
                return
        if body:
            parsed, wrong = parse_json(body, self.max_depth)
            if wrong is not None:
                await self._answer(send, 400, wrong)
                return
            if self.parsed_body_key is not None:
                scope[self.parsed_body_key] = parsed  # the app need not parse it again
        await self.app(scope, _replay(body, receive), send)

    def _size_problem(self, sent: str) -> dict[str, Any]:
        return problem(
            "body",
            f"too large: {sent}; the limit is {self.max_body_bytes} bytes",
            f"at most {self.max_body_bytes} bytes",
        )

    @staticmethod
    def _token_problem() -> dict[str, Any]:
        return problem(
            "Authorization",
            "a valid access token is required",
            "Authorization: Bearer <the service's access token>",
        )

    @staticmethod
    async def _answer(send: Send, status: int, wrong: dict[str, Any]) -> None:
        payload = error_bytes(wrong)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _deny_websocket(self, scope: Scope, send: Send) -> None:
        """Refuse the handshake with HTTP 401 where the server supports the denial response
        (uvicorn does); otherwise close before accepting (the client sees HTTP 403)."""
        if "websocket.http.response" in scope.get("extensions", {}):
            payload = error_bytes(self._token_problem())
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        (b"www-authenticate", b"Bearer"),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": payload})
        else:
            await send({"type": "websocket.close", "code": 1008})


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None if not declared, -1 if not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then the connection's own events."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
