"""The API's front door over a real service process: the access token and the body's size are
checked from the headers alone, before the body is read; bodies are JSON of bounded depth; no
error echoes the input; the telemetry WebSocket answers a missing token like REST (401)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from rig.service.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH, nesting_exceeds, parse_json
from tests.service.conftest import confirm_program, program_json

TOKEN = "guard-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(service_factory, monkeypatch):
    """A service with an access token, and a clinician session (sent with the token)."""
    monkeypatch.setenv("ITBRIG_ACCESS_TOKEN", TOKEN)  # the service's
    monkeypatch.setenv("ITBRIG_TOKEN", TOKEN)  # the command-line client's
    rig = service_factory()
    client = rig.start()
    rig.session = {**BEARER, "X-Session": client.session_token}
    return rig


def get(rig, path: str, headers: dict | None = None) -> httpx.Response:
    try:
        return httpx.get(rig.url + path, headers=headers, timeout=5)
    except httpx.HTTPError:
        return httpx.Response(599)


def raw_exchange(rig, head: str, body: bytes = b"", timeout_s: float = 5.0) -> tuple[int, bytes]:
    """Send *head* (request line and headers) and *body* on a socket; the status and body of the
    answer, read as soon as it comes (the rest of a declared body is never sent)."""
    with socket.create_connection(("127.0.0.1", rig.port), timeout=timeout_s) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        head_text, _, rest = answer.partition(b"\r\n\r\n")
        status = int(head_text.split(b" ")[1])
        length = next(
            int(line.split(b":")[1])
            for line in head_text.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


def request_head(method: str, path: str, headers: dict[str, str]) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def problems(body: bytes) -> list[dict]:
    detail = json.loads(body)["detail"]
    assert all(set(problem) == {"field", "message", "allowed"} for problem in detail)
    return detail


# -- unit: the JSON checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "wrong"),
    [
        (b'{"a": 1}', None),
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, None),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "deeper than 32"),
        (b'{"a": [' * 17 + b"1" + b"]}" * 17, "deeper than 32"),  # 34 levels, two per step
        (b"[" * 900 + b"]" * 900, "deeper than 32"),  # under the container limit
        (b'{"a": "' + b"[" * 1000 + b'"}', None),  # brackets in a string are not nesting
        (b"[" + b",".join([b"{}"] * 1024) + b"]", "more than 1024 JSON objects and lists"),
        (b"[" * 50_000 + b"]" * 50_000, "more than 1024 JSON objects and lists"),
        (b'{"a": 1', "not valid JSON: Expecting ',' delimiter at line 1 column 8"),
        (b'{"a": "\xc3\x28"}', "not UTF-8: byte 0xc3 at offset 7"),
    ],
    ids=[
        "object", "32 deep", "33 deep", "34 deep in objects", "900 deep", "brackets in a string",
        "1025 containers", "50 000 deep", "broken", "not UTF-8",
    ],
)  # fmt: skip
def test_json_checks(body, wrong):
    parsed, problem = parse_json(body)
    if wrong is None:
        assert problem is None and parsed == json.loads(body)
    else:
        assert parsed is None and wrong in problem["message"]
        assert problem["field"] == "body" and problem["allowed"]


def test_nesting_counts_objects_and_lists():
    assert not nesting_exceeds({"a": [{"b": [1]}]}, 4)
    assert nesting_exceeds({"a": [{"b": [1]}]}, 3)
    assert not nesting_exceeds([], 1)


# -- over a real process --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_no_token_is_refused_before_the_body_is_read(guarded):
    # 100 MB declared, nothing sent: without the token the answer comes at once.
    head = request_head(
        "POST",
        "/api/program/propose",
        {"Content-Type": "application/json", "Content-Length": str(100 * 2**20)},
    )
    status, body = raw_exchange(guarded, head)
    assert status == 401
    assert problems(body)[0]["field"] == "Authorization"
    # A malformed body without the token: 401, not a parse error (access comes first).
    response = httpx.post(guarded.url + "/api/login", content=b"{not json", timeout=5)
    assert response.status_code == 401


@pytest.mark.timeout(60)
def test_a_body_over_the_limit_is_refused_before_it_is_read(guarded):
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(100 * 2**20),
        **guarded.session,
    }
    status, body = raw_exchange(guarded, request_head("POST", "/api/program/propose", headers))
    assert status == 413
    (problem,) = problems(body)
    assert problem["field"] == "body"
    assert f"the limit is {MAX_BODY_BYTES} bytes" in problem["message"]
    # Sent without a length (chunked): read up to the limit only, then refused.
    chunks = iter([b'{"program": "' + b"x" * 40_000] * 5)
    response = httpx.post(
        guarded.url + "/api/program/propose", content=chunks, headers=guarded.session, timeout=10
    )
    assert response.status_code == 413
    assert "more than that was sent" in response.json()["detail"][0]["message"]
    # Exactly at the limit: read, parsed and refused by the schema, naming the field.
    at_limit = b'{"program": "' + b"x" * (MAX_BODY_BYTES - 15) + b'"}'
    assert len(at_limit) == MAX_BODY_BYTES
    json_session = {**guarded.session, "Content-Type": "application/json"}
    response = httpx.post(
        guarded.url + "/api/program/propose", content=at_limit, headers=json_session
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"].startswith("program")


@pytest.mark.timeout(60)
def test_errors_never_echo_the_input(guarded):
    secret = "echo-me-" + "y" * 30_000
    cases = [
        ("/api/refill/withdrawn", {"withdrawn_ml": secret}),
        ("/api/program/propose", {"program": {"mode": secret}}),
        ("/api/program/propose", {"program": {"mode": "continuous", "drug": secret}}),
        ("/api/login", {"role": "clinician", "pin": secret[:5000]}),
        ("/api/alarms/silence", {"duration_s": 60, secret[:3000]: 1}),
    ]
    for path, body in cases:
        response = httpx.post(guarded.url + path, json=body, headers=guarded.session)
        assert 400 <= response.status_code < 500, response.text
        assert "echo-me" not in response.text
        assert len(response.content) < 4096, (path, len(response.content))
        problems(response.content)


@pytest.mark.timeout(60)
def test_the_telemetry_websocket_answers_a_missing_token_like_rest(guarded):
    url = guarded.url.replace("http", "ws") + "/api/telemetry"
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=5).close()
        assert refused.value.response.status_code == 401
        assert problems(refused.value.response.body)[0]["field"] == "Authorization"
    with connect(url, additional_headers=BEARER, open_timeout=5) as socket_:
        sample = json.loads(socket_.recv(timeout=5))
    assert "state" in sample


@pytest.mark.timeout(120)
def test_hostile_bodies_raise_no_alarm(guarded):
    """Delivering, then bodies at the limit, malformed, too deep: refused, and the delivery loop
    never stalls long enough for the watchdog (bench/service.py measures how long it stalls)."""
    client = guarded.client
    confirm_program(client, program_json("continuous"))
    hostile = [b"\xff" * 60_000, b"[" * 60_000, b'{"a": [' + b"1," * 30_000 + b"1]}"]
    for _ in range(10):
        for body in hostile:
            response = httpx.post(guarded.url + "/api/login", content=body, headers=BEARER)
            assert response.status_code in (400, 422)
            response = httpx.post(guarded.url + "/api/login", content=body)
            assert response.status_code == 401
    status = client.get("/api/status")
    assert status["alarms"] == []
    assert status["state"] == "running"
    assert status["loop"]["ticks"] > 0
