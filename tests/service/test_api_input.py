"""Bad input to the real service's API: a 4xx naming the field, and nothing changed.

Each case compares a snapshot of the rig before and after the rejected call: therapy revision,
run state, program settings, active alarms, program history, event log, accepted audit entries,
time compression and bench faults. Rejections the service itself decides are also checked in the
audit log (read-only from the service's SQLite file): recorded as ``rejected`` with the role.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.service.conftest import PROJECT_DIR, confirm_program, program_json, wait_for

CLINICIAN_PIN = "2222"
TRAINEE_PIN = "1111"
NOT_A_PROPOSAL = "0" * 32


_http: dict[str, httpx.Client] = {}


def http(service) -> httpx.Client:
    """A kept-alive HTTP client of *service* (closed after each test)."""
    if service.url not in _http:
        _http[service.url] = httpx.Client(base_url=service.url, timeout=10.0)
    return _http[service.url]


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _http:
        _http.popitem()[1].close()


class Raw(bytes):
    """A request body sent as it is (``application/json``), not encoded from Python data."""


def send(
    service, method: str, path: str, body: Any = None, *, token: str | None = "clinician"
) -> httpx.Response:
    """One request; *token* "clinician" means the fixture's clinician session, None no session."""
    headers = {}
    if token == "clinician":
        token = service.client.session_token
    if token is not None:
        headers["X-Session"] = token
    if isinstance(body, Raw):
        headers["content-type"] = "application/json"
        return http(service).request(method, path, content=bytes(body), headers=headers)
    return http(service).request(method, path, json=body, headers=headers)


def detail_text(response: httpx.Response) -> str:
    """The error body as text, one ``field: message (allowed: ...)`` line per problem; checks
    that the body has the one error shape and echoes nothing back."""
    body = response.json()
    assert set(body) == {"detail"}, body
    assert isinstance(body["detail"], list) and body["detail"], body
    lines = []
    for problem in body["detail"]:
        assert set(problem) == {"field", "message", "allowed"}, problem
        assert isinstance(problem["field"], str) and isinstance(problem["message"], str)
        line = f"{problem['field']}: {problem['message']}"
        lines.append(line + (f" (allowed: {problem['allowed']})" if problem["allowed"] else ""))
    return "\n".join(lines)


def audit_rows(service) -> list[dict[str, Any]]:
    """The service's audit log, read-only."""
    uri = f"file:{service.data_dir / 'rig.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM audit ORDER BY id")]


def snapshot(service) -> dict[str, Any]:
    """Everything a rejected call must leave alone (delivered volumes move on by themselves)."""
    client = http(service)
    status = client.get("/api/status").json()
    therapy = status["therapy"]
    events = client.get("/api/events", params={"limit": 1000}).json()
    return {
        "revision": therapy["revision"],
        "state": status["state"],
        "halted": therapy["halted"],
        "settings": {
            k: v for k, v in therapy["settings"].items() if k not in ("reservoir", "worst_case")
        },
        "reservoir": {k: therapy["reservoir"][k] for k in ("capacity_ml", "low_threshold_ml")},
        "patient_boluses": therapy["patient_boluses_last_24h"],
        "alarms": [(a["id"], a["code"], a["acknowledged"]) for a in status["alarms"]],
        "time_compression": status["time_compression"],
        "history": client.get("/api/program/history").json(),
        "last_event": events[-1]["id"] if events else None,
        "faults": client.get("/api/bench").json()["faults"],
        "accepted_audit": sum(row["outcome"] == "ok" for row in audit_rows(service)),
    }


def assert_rejected_unchanged(
    service,
    request: tuple,
    status: int,
    field: str,
    *,
    token: str | None = "clinician",
    before: dict[str, Any] | None = None,
) -> httpx.Response:
    """Send *request*; expect *status* with *field* in the message and the rig unchanged."""
    if before is None:
        before = snapshot(service)
    response = send(service, *request, token=token)
    assert response.status_code == status, (request, response.status_code, response.text)
    assert field in detail_text(response), (request, response.text)
    assert snapshot(service) == before, request
    return response


def assert_table_rejected(service, subtests, cases: list[tuple], status: int) -> None:
    """Each ``(method, path, body, field)`` case is rejected with *status* and changes nothing."""
    before = snapshot(service)
    for method, path, body, field in cases:
        with subtests.test(f"{method} {path} {field}: {body!r:.60}"):
            response = send(service, method, path, body)
            after = snapshot(service)
            moved, before = after != before, after
            assert response.status_code == status, (path, body, response.text)
            assert field in detail_text(response), (path, body, response.text)
            assert not moved, (path, body)


@pytest.fixture
def running(service):
    """A service delivering the patient-bolus example program."""
    status = confirm_program(service.client, program_json("patient_bolus"))
    assert status["state"] == "running"
    return service


# -- malformed, mistyped, missing, unknown and out-of-range input ------------------------------

LOGIN = {"role": "clinician", "pin": CLINICIAN_PIN}
CONTINUOUS = {"drug": "baclofen", "concentration_ug_per_ml": 500.0, "mode": "continuous",
              "dose_ug_per_day": 300.0}  # fmt: skip
BOLUS_BLOCK = {"dose_ug": 25.0, "duration_min": 10.0, "lockout_min": 180.0, "max_per_24h": 4}
CONFIRM = {"proposal_id": NOT_A_PROPOSAL, "accept_warnings": False}
FILL = {"volume_ml": 18.0, "concentration_ug_per_ml": 500.0}


def changed(base: dict, **changes: Any) -> dict:
    return {**base, **changes}


def without(base: dict, key: str) -> dict:
    return {k: v for k, v in base.items() if k != key}


def propose(**changes: Any) -> dict:
    return {"program": changed(CONTINUOUS, **changes)}


BODY_ENDPOINTS = [
    ("POST", "/api/login"),
    ("POST", "/api/program/propose"),
    ("POST", "/api/program/confirm"),
    ("POST", "/api/alarms/silence"),
    ("POST", "/api/refill/withdrawn"),
    ("POST", "/api/refill/fill"),
    ("PUT", "/api/settings"),
    ("POST", "/api/faults"),
]
# Not JSON at all (400, the message says what is wrong and where)...
MALFORMED = [
    (Raw(b'{"withdrawn_ml": 5'), "not valid JSON: Expecting ',' delimiter at line 1 column 19"),
    (Raw(b"{'withdrawn_ml': 5}"), "not valid JSON: Expecting property name enclosed in double"),
    (Raw(b"withdrawn_ml=5"), "not valid JSON: Expecting value at line 1 column 1"),
    (Raw(b"\xff\xfe"), "not UTF-8: byte 0xff at offset 0"),
    (Raw(b'{"withdrawn_ml": "caf\xe9"}'), "not UTF-8: byte 0xe9 at offset 21"),
]
# ...and JSON that is not the object the schema asks for (422).
NOT_AN_OBJECT = [Raw(b""), Raw(b"[]"), Raw(b'"text"'), Raw(b"null")]

# (method, path, body, field the message must name)
BAD_BODIES = [
    ("POST", "/api/login", without(LOGIN, "role"), "role"),
    ("POST", "/api/login", without(LOGIN, "pin"), "pin"),
    ("POST", "/api/login", changed(LOGIN, role="admin"), "role"),
    ("POST", "/api/login", changed(LOGIN, role=None), "role"),
    ("POST", "/api/login", changed(LOGIN, pin=2222), "pin"),
    ("POST", "/api/login", changed(LOGIN, pin="22a2"), "pin"),
    ("POST", "/api/login", changed(LOGIN, pin="２２２２"), "pin"),
    ("POST", "/api/login", changed(LOGIN, pin="2" * 1000), "pin"),
    ("POST", "/api/login", changed(LOGIN, pin=""), "pin"),
    ("POST", "/api/login", changed(LOGIN, remember=True), "remember"),
    ("POST", "/api/program/propose", {}, "program"),
    ("POST", "/api/program/propose", {"program": None}, "program"),
    ("POST", "/api/program/propose", {"program": without(CONTINUOUS, "mode")}, "mode"),
    ("POST", "/api/program/propose", propose(mode="turbo"), "mode"),
    (
        "POST",
        "/api/program/propose",
        {"program": without(CONTINUOUS, "dose_ug_per_day")},
        "dose_ug_per_day",
    ),
    ("POST", "/api/program/propose", propose(dose_ug_per_day="300"), "dose_ug_per_day"),
    ("POST", "/api/program/propose", propose(dose_ug_per_day=0), "dose_ug_per_day"),
    ("POST", "/api/program/propose", propose(dose_ug_per_day=-300), "dose_ug_per_day"),
    ("POST", "/api/program/propose", propose(dose_ug_per_day=10**30), "dose_ug_per_day"),
    ("POST", "/api/program/propose", propose(dose_ug_per_day=1e308), "dose_ug_per_day"),
    (
        "POST",
        "/api/program/propose",
        Raw(
            b'{"program": {"drug": "baclofen", '
            b'"concentration_ug_per_ml": 500, "mode": "continuous", "dose_ug_per_day": NaN}}'
        ),
        "dose_ug_per_day",
    ),
    (
        "POST",
        "/api/program/propose",
        Raw(
            b'{"program": {"drug": "baclofen", '
            b'"concentration_ug_per_ml": 500, "mode": "continuous", "dose_ug_per_day": 1e400}}'
        ),
        "dose_ug_per_day",
    ),
    (
        "POST",
        "/api/program/propose",
        propose(concentration_ug_per_ml=0),
        "concentration_ug_per_ml",
    ),
    ("POST", "/api/program/propose", propose(drug=""), "drug"),
    ("POST", "/api/program/propose", propose(rate_ul_per_h=25), "rate_ul_per_h"),
    ("POST", "/api/program/propose", changed(propose(), force=True), "force"),
    (
        "POST",
        "/api/program/propose",
        propose(patient_bolus=changed(BOLUS_BLOCK, lockout_min=5)),
        "lockout_min",
    ),
    (
        "POST",
        "/api/program/propose",
        propose(patient_bolus=changed(BOLUS_BLOCK, max_per_24h=0)),
        "max_per_24h",
    ),
    (
        "POST",
        "/api/program/propose",
        propose(patient_bolus=changed(BOLUS_BLOCK, max_per_24h=2.5)),
        "max_per_24h",
    ),
    (
        "POST",
        "/api/program/propose",
        propose(patient_bolus=without(BOLUS_BLOCK, "dose_ug")),
        "dose_ug",
    ),
    (
        "POST",
        "/api/program/propose",
        {
            "program": {
                "drug": "baclofen",
                "concentration_ug_per_ml": 500,
                "mode": "flex",
                "steps": [{"start": "06:00", "dose_ug_per_day": 300}],
            }
        },
        "steps",
    ),
    (
        "POST",
        "/api/program/propose",
        {
            "program": {
                "drug": "baclofen",
                "concentration_ug_per_ml": 500,
                "mode": "flex",
                "steps": [{"start": "25:00", "dose_ug_per_day": 300}],
            }
        },
        "start",
    ),
    (
        "POST",
        "/api/program/propose",
        {
            "program": {
                "drug": "baclofen",
                "concentration_ug_per_ml": 500,
                "mode": "periodic_bolus",
                "background_dose_ug_per_day": 100,
                "bolus_dose_ug": 50,
                "bolus_duration_min": 30,
                "times": ["08:00"],
                "every_h": 6,
            }
        },
        "every_h",
    ),
    ("POST", "/api/program/confirm", {}, "proposal_id"),
    ("POST", "/api/program/confirm", changed(CONFIRM, proposal_id=""), "proposal_id"),
    ("POST", "/api/program/confirm", changed(CONFIRM, proposal_id="a" * 65), "proposal_id"),
    ("POST", "/api/program/confirm", changed(CONFIRM, proposal_id=12345), "proposal_id"),
    ("POST", "/api/program/confirm", changed(CONFIRM, accept_warnings="yes"), "accept_warnings"),
    ("POST", "/api/program/confirm", changed(CONFIRM, accept_warnings=1), "accept_warnings"),
    ("POST", "/api/program/confirm", changed(CONFIRM, revision=1), "revision"),
    ("POST", "/api/alarms/silence", {"duration_s": 0}, "duration_s"),
    ("POST", "/api/alarms/silence", {"duration_s": -60}, "duration_s"),
    ("POST", "/api/alarms/silence", {"duration_s": 121}, "duration_s"),
    ("POST", "/api/alarms/silence", {"duration_s": 10**30}, "duration_s"),
    ("POST", "/api/alarms/silence", {"duration_s": "60"}, "duration_s"),
    ("POST", "/api/alarms/silence", {"duration_s": None}, "duration_s"),
    ("POST", "/api/alarms/silence", Raw(b'{"duration_s": NaN}'), "duration_s"),
    ("POST", "/api/alarms/silence", Raw(b'{"duration_s": Infinity}'), "duration_s"),
    ("POST", "/api/alarms/silence", Raw(b'{"duration_s": -Infinity}'), "duration_s"),
    ("POST", "/api/alarms/silence", {"duration_s": 60, "forever": True}, "forever"),
    ("POST", "/api/refill/withdrawn", {}, "withdrawn_ml"),
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": -1}, "withdrawn_ml"),
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": 41}, "withdrawn_ml"),
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": 25}, "withdrawn_ml"),  # over capacity
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": "5"}, "withdrawn_ml"),
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": [5]}, "withdrawn_ml"),
    ("POST", "/api/refill/withdrawn", Raw(b'{"withdrawn_ml": 1e999}'), "withdrawn_ml"),
    ("POST", "/api/refill/fill", without(FILL, "volume_ml"), "volume_ml"),
    (
        "POST",
        "/api/refill/fill",
        without(FILL, "concentration_ug_per_ml"),
        "concentration_ug_per_ml",
    ),
    ("POST", "/api/refill/fill", changed(FILL, volume_ml=0), "volume_ml"),
    ("POST", "/api/refill/fill", changed(FILL, volume_ml=-5), "volume_ml"),
    ("POST", "/api/refill/fill", changed(FILL, volume_ml=1e300), "volume_ml"),
    (
        "POST",
        "/api/refill/fill",
        changed(FILL, concentration_ug_per_ml=0),
        "concentration_ug_per_ml",
    ),
    (
        "POST",
        "/api/refill/fill",
        changed(FILL, concentration_ug_per_ml=2001),
        "concentration_ug_per_ml",
    ),
    ("POST", "/api/refill/fill", changed(FILL, drug="morphine"), "drug"),
    ("PUT", "/api/settings", {}, "time_compression"),
    ("PUT", "/api/settings", {"time_compression": 0}, "time_compression"),
    ("PUT", "/api/settings", {"time_compression": 0.5}, "time_compression"),
    ("PUT", "/api/settings", {"time_compression": -1440}, "time_compression"),
    ("PUT", "/api/settings", {"time_compression": 100_001}, "time_compression"),
    ("PUT", "/api/settings", {"time_compression": "fast"}, "time_compression"),
    ("PUT", "/api/settings", Raw(b'{"time_compression": NaN}'), "time_compression"),
    ("PUT", "/api/settings", {"time_compression": 1440, "hal": "gpio"}, "hal"),
    ("POST", "/api/faults", {"occlusion_fraction": 1.5}, "occlusion_fraction"),
    ("POST", "/api/faults", {"occlusion_fraction": -0.1}, "occlusion_fraction"),
    ("POST", "/api/faults", {"leak_fraction": 1}, "leak_fraction"),
    ("POST", "/api/faults", {"motor_stalled": "yes"}, "motor_stalled"),
    ("POST", "/api/faults", {"motor_stalled": 1}, "motor_stalled"),
    ("POST", "/api/faults", {"sensor_bias_ul_per_min": -1001}, "sensor_bias_ul_per_min"),
    ("POST", "/api/faults", {"free_flow_ul_per_min": 10**30}, "free_flow_ul_per_min"),
    ("POST", "/api/faults", {"air_bubble_ul": 0}, "air_bubble_ul"),
    ("POST", "/api/faults", Raw(b'{"slip_fraction": NaN}'), "slip_fraction"),
    ("POST", "/api/faults", {"motor_stalled": True, "gremlins": 3}, "gremlins"),
]
# Well-formed, but the drug library refuses them (409: the rig's settings, not the schema).
REFUSED_BY_THE_LIBRARY = [
    ("POST", "/api/program/propose", propose(dose_ug_per_day=2500), "dose"),  # hard limit
    (
        "POST",
        "/api/program/propose",
        propose(concentration_ug_per_ml=123),
        "concentration_ug_per_ml",
    ),
    ("POST", "/api/program/propose", propose(drug="morphine"), "drug"),
    ("POST", "/api/refill/fill", changed(FILL, concentration_ug_per_ml=123), "concentration"),
]
BAD_QUERIES = [
    ("GET", "/api/events?since_id=-1", None, "since_id"),
    ("GET", "/api/events?since_id=abc", None, "since_id"),
    ("GET", "/api/events?since_id=1e3", None, "since_id"),
    ("GET", f"/api/events?since_id={10**30}", None, "since_id"),
    ("GET", "/api/events?limit=0", None, "limit"),
    ("GET", "/api/events?limit=1001", None, "limit"),
    ("GET", "/api/events?limit=-5", None, "limit"),
    ("POST", "/api/alarms/abc/acknowledge", None, "alarm_id"),
    ("POST", "/api/alarms/1.5/acknowledge", None, "alarm_id"),
]


@pytest.mark.timeout(180)
def test_malformed_json_is_rejected_by_every_body_endpoint(running, subtests):
    cases = [
        (method, path, raw, f"body: {what}")
        for method, path in BODY_ENDPOINTS
        for raw, what in MALFORMED
    ]
    assert_table_rejected(running, subtests, cases, 400)
    cases = [
        (method, path, raw, "body") for method, path in BODY_ENDPOINTS for raw in NOT_AN_OBJECT
    ]
    assert_table_rejected(running, subtests, cases, 422)


@pytest.mark.timeout(60)
def test_json_nested_too_deep_is_refused_naming_the_limit(running):
    just_deep_enough = {
        "program": {"catheter": [[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    }
    too_deep = "body: JSON nested deeper than 32 levels"
    too_many = "body: more than 1024 JSON objects and lists"
    for body, status, message in (
        (Raw(b"[" * 33 + b"]" * 33), 400, too_deep),
        (Raw(b"[" * 1000 + b"]" * 1000), 400, too_deep),
        (Raw(b'{"a": [' * 20 + b"1" + b"]}" * 20), 400, too_deep),
        (Raw(b"[" * 32_000 + b"]" * 32_000), 400, too_many),
        (just_deep_enough, 422, "program"),  # 30 levels: parsed, then refused by the schema
    ):
        for method, path in BODY_ENDPOINTS:
            before = snapshot(running)
            response = send(running, method, path, body)
            assert response.status_code == status, (path, response.text)
            assert message in detail_text(response)
            assert snapshot(running) == before


@pytest.mark.timeout(180)
def test_bad_bodies_are_rejected_naming_the_field(running, subtests):
    assert_table_rejected(running, subtests, BAD_BODIES, 422)


@pytest.mark.timeout(120)
def test_bodies_the_drug_library_refuses_are_a_conflict(running, subtests):
    running.client.post("/api/refill/withdrawn", {"withdrawn_ml": 19.5})
    assert_table_rejected(running, subtests, REFUSED_BY_THE_LIBRARY, 409)


@pytest.mark.timeout(60)
def test_bad_query_and_path_parameters_are_rejected(running, subtests):
    assert_table_rejected(running, subtests, BAD_QUERIES, 422)


@pytest.mark.timeout(60)
def test_a_service_rejection_is_audited_with_its_role(running):
    before = len(audit_rows(running))
    response = assert_rejected_unchanged(
        running, ("POST", "/api/program/propose", propose(dose_ug_per_day=2500)), 409, "dose"
    )
    rows = audit_rows(running)[before:]
    assert [(r["action"], r["role"], r["outcome"]) for r in rows] == [
        ("program.propose", "clinician", "rejected")
    ]
    assert response.json()["detail"][0]["message"] in rows[0]["detail"]


TINY = 5e-324  # the smallest positive float: allowed by the schema (greater than 0)
EXTREME_PROGRAMS = [
    changed(CONTINUOUS, dose_ug_per_day=TINY),
    changed(
        CONTINUOUS,
        patient_bolus=changed(
            BOLUS_BLOCK, dose_ug=TINY, duration_min=TINY, lockout_min=TINY, max_per_24h=24
        ),
    ),
    changed(CONTINUOUS, patient_bolus=changed(BOLUS_BLOCK, dose_ug=TINY, max_per_24h=24)),
    {"drug": "baclofen", "concentration_ug_per_ml": 2000, "mode": "single_bolus",
     "dose_ug": TINY, "duration_min": 1440},
    {"drug": "baclofen", "concentration_ug_per_ml": 50, "mode": "single_bolus",
     "dose_ug": 199, "duration_min": TINY},
    {"drug": "baclofen", "concentration_ug_per_ml": 500, "mode": "priming_bolus",
     "catheter": {"length_cm": 200, "ul_per_cm": 50, "pump_tubing_ul": 1000},
     "rate_ul_per_h": TINY, "then": {"mode": "continuous", "dose_ug_per_day": TINY}},
    {"drug": "baclofen", "concentration_ug_per_ml": 500, "mode": "periodic_bolus",
     "background_dose_ug_per_day": 0, "bolus_dose_ug": TINY, "bolus_duration_min": TINY,
     "every_h": 1},
    {"drug": "baclofen", "concentration_ug_per_ml": 500, "mode": "priming_bolus",
     "catheter": {"length_cm": TINY, "ul_per_cm": TINY, "pump_tubing_ul": 0},
     "rate_ul_per_h": TINY,
     "then": {"mode": "periodic_bolus", "background_dose_ug_per_day": 0, "bolus_dose_ug": TINY,
              "bolus_duration_min": TINY, "times": ["08:30"]}},
]  # fmt: skip


@pytest.mark.timeout(60)
def test_extreme_values_the_schema_allows_never_fail_the_server(service, subtests):
    """Accepted and usable, or refused naming the program: never a 5xx."""
    for program in EXTREME_PROGRAMS:
        with subtests.test(f"{program['mode']}: {program!r:.80}"):
            before = snapshot(service)
            response = send(service, "POST", "/api/program/propose", {"program": program})
            if response.status_code in (409, 422):
                assert "program" in detail_text(response)
                assert snapshot(service) == before
                continue
            assert response.status_code == 200, response.text
            confirmed = send(
                service,
                "POST",
                "/api/program/confirm",
                {"proposal_id": response.json()["proposal_id"], "accept_warnings": True},
            )
            assert confirmed.status_code == 200, confirmed.text
            assert send(service, "POST", "/api/bolus/patient").status_code == 200
            assert http(service).get("/api/status").status_code == 200
            assert send(service, "POST", "/api/stop").status_code == 200


# -- calls in the wrong state -----------------------------------------------------------------


def assert_audited_rejection(service, action: str, message: Any, role: str = "clinician"):
    """The last audit row is this action's rejection, its detail the message answered."""
    row = audit_rows(service)[-1]
    assert (row["action"], row["role"], row["outcome"]) == (action, role, "rejected")
    messages = [p["message"] for p in message] if isinstance(message, list) else [message]
    for text in messages:
        assert text in row["detail"], (text, row["detail"])


@pytest.mark.timeout(60)
def test_confirm_needs_a_current_proposal(running):
    client = running.client
    response = assert_rejected_unchanged(
        running, ("POST", "/api/program/confirm", CONFIRM), 409, "proposal_id"
    )
    assert_audited_rejection(running, "program.confirm", response.json()["detail"])

    # Superseded: confirming another proposal drops every open one.
    old = client.post("/api/program/propose", {"program": program_json("continuous")})
    confirm_program(client, program_json("patient_bolus"))
    assert_rejected_unchanged(
        running, ("POST", "/api/program/confirm", {"proposal_id": old["proposal_id"]}),
        409, "proposal_id",
    )  # fmt: skip

    # Stale: the pump's settings changed (stopped) after the proposal was made.
    stale = client.post("/api/program/propose", {"program": program_json("continuous")})
    client.post("/api/stop")
    response = assert_rejected_unchanged(
        running, ("POST", "/api/program/confirm", {"proposal_id": stale["proposal_id"]}),
        409, "proposal_id",
    )  # fmt: skip
    assert "changed" in detail_text(response)

    # Soft-limit warnings must be accepted explicitly.
    warned = client.post(
        "/api/program/propose", {"program": changed(CONTINUOUS, dose_ug_per_day=1000)}
    )
    assert warned["warnings"]
    assert_rejected_unchanged(
        running, ("POST", "/api/program/confirm", {"proposal_id": warned["proposal_id"]}),
        409, "accept_warnings",
    )  # fmt: skip
    # ...and the refused proposal is still open: accepting its warnings applies it.
    confirmed = client.post(
        "/api/program/confirm", {"proposal_id": warned["proposal_id"], "accept_warnings": True}
    )
    assert confirmed["rates"]["dose_ug_per_day"] == pytest.approx(1000)


@pytest.mark.timeout(60)
def test_resume_needs_a_pending_power_loss_recovery(running):
    response = assert_rejected_unchanged(
        running, ("POST", "/api/recovery/resume", None), 409, "state"
    )
    assert "recovery" in detail_text(response)
    assert_audited_rejection(running, "recovery.resume", response.json()["detail"])


@pytest.mark.timeout(60)
def test_refill_fill_needs_the_withdrawn_volume_first(running):
    response = assert_rejected_unchanged(running, ("POST", "/api/refill/fill", FILL), 409, "state")
    assert "withdrawn" in detail_text(response)
    assert_audited_rejection(running, "refill.fill", response.json()["detail"])

    verdict = running.client.post("/api/refill/withdrawn", {"withdrawn_ml": 19.5})
    assert verdict["significant"] is False
    # More than the reservoir holds: refused, and the withdrawn step still stands.
    assert_rejected_unchanged(
        running, ("POST", "/api/refill/fill", changed(FILL, volume_ml=30)), 422, "volume_ml"
    )
    filled = running.client.post("/api/refill/fill", FILL)
    assert filled["volume_ml"] == FILL["volume_ml"]
    # The fill used up the withdrawn step: a second fill needs a new one.
    assert_rejected_unchanged(running, ("POST", "/api/refill/fill", FILL), 409, "state")


@pytest.mark.slow(seconds=12)
@pytest.mark.timeout(90)
def test_no_bolus_or_restart_while_a_stopping_alarm_is_active(running):
    client = running.client
    client.post("/api/faults", {"motor_stalled": True})
    assert wait_for(lambda: [a for a in client.get("/api/status")["alarms"]], 40)
    # The loop may still be settling the alarm into the books; wait until it is quiet.
    assert wait_for(lambda: snapshot(running) == snapshot(running), 10, period_s=0.5)
    alarm = client.get("/api/status")["alarms"][0]
    assert alarm["code"] == "no_flow"

    # A refused patient bolus is an answer, not an error (200): recorded in the audit log as
    # rejected with its reason, and nothing else changes.
    trainee = client.post("/api/login", {"role": "trainee", "pin": TRAINEE_PIN})["token"]
    for token, role in (("clinician", "clinician"), (trainee, "trainee")):
        before = snapshot(running)
        decision = send(running, "POST", "/api/bolus/patient", token=token)
        assert decision.status_code == 200, decision.text
        assert decision.json()["granted"] is False
        assert decision.json()["reason"] == "alarm_active"
        assert "no_flow" in decision.json()["message"]
        # The request and its refusal are in the event log; nothing else changed.
        request_event = http(running).get("/api/events", params={"kind": "bolus"}).json()[-1]
        assert "refused (alarm_active)" in request_event["message"]
        assert request_event["role"] == role
        assert request_event["detail"]["granted"] is False
        assert snapshot(running) == {**before, "last_event": request_event["id"]}
        assert_audited_rejection(running, "bolus.patient", decision.json()["message"], role)

    response = assert_rejected_unchanged(running, ("POST", "/api/start", None), 409, "state")
    assert "no_flow" in detail_text(response)
    assert_audited_rejection(running, "start", response.json()["detail"])

    response = assert_rejected_unchanged(
        running, ("POST", f"/api/alarms/{alarm['id'] + 1000}/acknowledge", None), 404, "alarm_id"
    )
    assert_audited_rejection(running, "alarms.acknowledge", response.json()["detail"])


# -- sessions, roles and PINs -----------------------------------------------------------------

STATE_CHANGING = [
    ("POST", "/api/program/propose", {"program": CONTINUOUS}),
    ("POST", "/api/program/confirm", CONFIRM),
    ("POST", "/api/start", None),
    ("POST", "/api/stop", None),
    ("POST", "/api/recovery/resume", None),
    ("POST", "/api/bolus/patient", None),
    ("POST", "/api/alarms/1/acknowledge", None),
    ("POST", "/api/alarms/acknowledge-all", None),
    ("POST", "/api/alarms/silence", {"duration_s": 60}),
    ("POST", "/api/refill/withdrawn", {"withdrawn_ml": 19}),
    ("POST", "/api/refill/fill", FILL),
    ("PUT", "/api/settings", {"time_compression": 60}),
    ("POST", "/api/faults", {"motor_stalled": True}),
    ("DELETE", "/api/faults", None),
]
CLINICIAN_ONLY = [request for request in STATE_CHANGING if request[1] != "/api/bolus/patient"]


@pytest.mark.timeout(120)
def test_state_changing_calls_need_a_live_session(running, subtests):
    ended = running.client.post("/api/login", LOGIN)["token"]
    assert send(running, "POST", "/api/logout", token=ended).status_code == 200
    for token in (None, "", "not-a-session", ended, "é" * 40):
        for request in STATE_CHANGING:
            with subtests.test(f"{request[0]} {request[1]} token={token!r}"):
                headers = {} if token is None else {"X-Session": token.encode()}
                before = snapshot(running)
                method, path, body = request
                response = http(running).request(method, path, json=body, headers=headers)
                assert response.status_code == 401, response.text
                assert "X-Session" in detail_text(response)
                assert snapshot(running) == before


@pytest.mark.timeout(120)
def test_a_trainee_may_not_call_clinician_endpoints(running, subtests):
    trainee = running.client.post("/api/login", {"role": "trainee", "pin": TRAINEE_PIN})["token"]
    for request in CLINICIAN_ONLY:
        with subtests.test(f"{request[0]} {request[1]}"):
            response = assert_rejected_unchanged(running, request, 403, "trainee", token=trainee)
            assert_audited_rejection(running, request[1], response.json()["detail"], "trainee")
    # The one state-changing call a trainee may make.
    assert send(running, "POST", "/api/bolus/patient", token=trainee).json()["granted"] is True


@pytest.mark.timeout(60)
def test_five_wrong_pins_lock_the_role_even_against_the_right_pin(service):
    for attempt in range(1, 5):
        response = send(service, "POST", "/api/login", changed(LOGIN, pin="9999"), token=None)
        assert response.status_code == 401, response.text
        assert "pin" in detail_text(response)
        assert f"{5 - attempt} attempt" in detail_text(response)
    fifth = send(service, "POST", "/api/login", changed(LOGIN, pin="9999"), token=None)
    assert fifth.status_code == 429, fifth.text
    sixth = send(service, "POST", "/api/login", LOGIN, token=None)
    assert sixth.status_code == 429, sixth.text
    assert "clinician" in detail_text(sixth) and "locked" in detail_text(sixth)
    # Only that role is locked.
    trainee = send(
        service, "POST", "/api/login", {"role": "trainee", "pin": TRAINEE_PIN}, token=None
    )
    assert trainee.status_code == 200, trainee.text


@pytest.mark.timeout(60)
def test_malformed_pins_are_not_counted_as_attempts(service):
    for pin in ("abcd", "123", "123456789", "", " 2222", "２２２２", "12.3"):
        response = send(service, "POST", "/api/login", changed(LOGIN, pin=pin), token=None)
        assert response.status_code == 422, (pin, response.text)
        assert "pin" in detail_text(response)
    assert send(service, "POST", "/api/login", LOGIN, token=None).status_code == 200


@pytest.mark.timeout(60)
def test_access_token_mode_rejects_any_header_text_without_failing(service_factory, monkeypatch):
    """Beyond loopback every request needs the token; odd header bytes are a 401, not a 5xx."""
    token = "bench-token-0123456789"
    monkeypatch.setenv("ITBRIG_ACCESS_TOKEN", token)
    rig = service_factory()
    log = open(rig.data_dir / "service.log", "ab")  # noqa: SIM115 (closed with the process)
    rig.process = subprocess.Popen(
        [sys.executable, "-m", "rig.cli", "serve", "--hal", "sim", "--port", str(rig.port),
         "--data-dir", str(rig.data_dir)],
        cwd=PROJECT_DIR, stdout=log, stderr=log,
    )  # fmt: skip
    good = {"Authorization": f"Bearer {token}"}

    def answers() -> bool:
        try:
            return httpx.get(rig.url + "/api/status", headers=good, timeout=1).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.1)
            return False

    assert wait_for(answers, 30)
    for header in (None, "Bearer wrong", f"bearer {token}", "Bearer é",
                   "Bearer \u00ff\u00fe", "Basic Zm9vOmJhcg=="):  # fmt: skip
        headers = {} if header is None else {"Authorization": header.encode("latin-1")}
        response = http(rig).get("/api/status", headers=headers)
        assert response.status_code == 401, (header, response.text)
        assert "Authorization" in detail_text(response)
