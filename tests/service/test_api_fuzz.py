"""Fuzz the real service's API from the OpenAPI schema it serves (schemathesis).

Every operation but ``/api/logout`` (which would end the fuzzing session) and the telemetry
WebSocket (not in the schema) runs with the schema's examples (the example programs for
propose), boundary values of every field (coverage phase) and random valid and invalid data, with
a clinician session so that the state-changing operations are reached; a valid confirm is given a
live proposal of an example program, so that confirm succeeds. Every one of schemathesis's checks
runs on every response: never a 5xx, every status code and body documented (errors included),
invalid data rejected, valid data accepted (or refused by the rig's state: 401, 403, 404, 409,
429; a program that breaks a rule between its fields, which JSON Schema cannot state, is refused
with 422 naming that rule). For every 4xx the therapy revision, run state, program settings
and program history are unchanged (when the delivery loop raised or cleared an alarm meanwhile,
which moves the revision by itself, only the program and its history are compared). The
bench-fault operations
(``/api/faults``) may change bench faults and, through them, raise alarms: they are exempt from
that check and the faults are cleared after each of their calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from schemathesis import checks
from schemathesis.generation import GenerationMode

from tests.service.conftest import program_json

SEED = 20260105
MAX_EXAMPLES = 60  # per operation, random phase; the coverage phase adds its boundary cases
CALIBRATION_MAX_EXAMPLES = 15
FAULTS_PATH = "/api/faults"
PROPOSE_PATH = "/api/program/propose"
CONFIRM_PATH = "/api/program/confirm"
LIBRARY_CONCENTRATIONS = (50.0, 500.0, 1000.0, 2000.0)
CONFIRMED_EXAMPLES = ("continuous", "patient_bolus", "flex", "periodic_bolus")
# Rules between fields of a program that JSON Schema cannot state (the schema's descriptions do):
# a schema-valid program may break one, and is then refused with 422 naming it.
CROSS_FIELD_RULES = (
    "must be at least duration_min",
    "the first step must start at 00:00",
    "steps must be in ascending time order",
    "give exactly one of times",
    "first_at only applies with every_h",
    "times must be in ascending order",
    "overlaps the next bolus",
    "would take",  # a priming that lasts longer than a day (catheter volume / rate)
)

schema = schemathesis.pytest.from_fixture("served_schema").exclude(path="/api/logout")


@pytest.fixture
def served_schema(service):
    """The schema as the running service serves it; every request carries the clinician session."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"X-Session": service.client.session_token},
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            # The training operations answer 409 while no scenario runs, the calibration ones
            # change nothing for a clinician (engineer only) or only read the books: fewer random
            # examples (their boundary cases all still run) keep the suite's time.
            "operations": [
                {"include-path-regex": "^/api/training", "generation": {"max-examples": 10}},
                {
                    "include-path-regex": "^/api/calibration",
                    "generation": {"max-examples": CALIBRATION_MAX_EXAMPLES},
                },
            ],
        }
    )
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json", config=config)


@dataclass
class RigWatch:
    """What a rejected request must leave alone, fetched lazily and kept between requests."""

    http: httpx.Client
    known: dict[str, Any] | None = None

    confirmed: int = 0
    confirm_accepted: int = 0

    def read(self) -> dict[str, Any]:
        status = self.http.get("/api/status").json()
        therapy = status["therapy"]
        settings = therapy["settings"]
        # Not the engine's revision: the delivery loop raises and clears alarms on its own (a
        # bench fault injected and cleared by an earlier call settles later), which bumps it.
        return {
            "daily_dose": settings["daily_dose_ug_per_day"],
            "patient_boluses": therapy["patient_boluses_last_24h"],
            "time_compression": status["time_compression"],
            "state": status["state"],
            "alarms": sorted(alarm["code"] for alarm in status["alarms"]),
            "program": [settings[key] for key in ("mode", "drug", "concentration_ug_per_ml")],
            "history": len(self.http.get("/api/program/history").json()),
        }

    @staticmethod
    def unchanged(before: dict[str, Any], after: dict[str, Any]) -> bool:
        if before["alarms"] != after["alarms"]:  # the loop moved the revision by itself
            return all(before[key] == after[key] for key in ("program", "history"))
        return before == after

    def before(self) -> dict[str, Any]:
        if self.known is None:
            self.known = self.read()
        return self.known


@pytest.fixture
def rig_watch(service) -> Iterator[RigWatch]:
    headers = {"X-Session": service.client.session_token}
    with httpx.Client(base_url=service.url, headers=headers, timeout=10.0) as http:
        watch = RigWatch(http)
        yield watch
    if watch.confirmed:  # the confirm operation ran: valid confirms did change the program
        assert watch.confirm_accepted > 0, "no generated confirm was ever accepted"


@pytest.fixture
def session(service) -> Iterator[requests.Session]:
    """Kept-alive connections for the generated requests."""
    with requests.Session() as kept_alive:
        yield kept_alive


def positive(case) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


def aim_at_the_drug_library(case) -> None:
    """Valid generated programs almost never name a library concentration; make them do so, so
    that proposals reach the engine's planning instead of stopping at the drug check."""
    body = case.body
    if (
        case.operation.path == PROPOSE_PATH
        and positive(case)
        and isinstance(body, dict)
        and isinstance(body.get("program"), dict)
    ):
        body["program"]["drug"] = "baclofen"
        if body["program"].get("concentration_ug_per_ml") not in LIBRARY_CONCENTRATIONS:
            body["program"]["concentration_ug_per_ml"] = 500.0


def aim_at_a_live_proposal(case, watch: RigWatch) -> None:
    """A valid confirm gets the id of a live proposal (an example program), so that confirm is
    reached and succeeds, not only refused for an unknown proposal."""
    body = case.body
    if case.operation.path == CONFIRM_PATH and positive(case) and isinstance(body, dict):
        name = CONFIRMED_EXAMPLES[watch.confirmed % len(CONFIRMED_EXAMPLES)]
        watch.confirmed += 1
        proposal = watch.http.post(PROPOSE_PATH, json={"program": program_json(name)})
        if proposal.status_code == 200:
            body["proposal_id"] = proposal.json()["proposal_id"]
            watch.known = None


@schema.parametrize()
@pytest.mark.slow(seconds=80)
@pytest.mark.timeout(300)
def test_api_fuzz(case, service, rig_watch, session):
    aim_at_the_drug_library(case)
    aim_at_a_live_proposal(case, rig_watch)
    before = rig_watch.before()
    response = case.call(base_url=service.url, session=session)
    if case.operation.path == CONFIRM_PATH and response.status_code == 200:
        rig_watch.confirm_accepted += 1
    if case.operation.path == FAULTS_PATH:
        rig_watch.http.delete(FAULTS_PATH).raise_for_status()
        rig_watch.known = None
    elif 400 <= response.status_code < 500:
        after = rig_watch.read()
        rig_watch.known = after
        assert rig_watch.unchanged(before, after), (
            f"rejected with {response.status_code} but the rig changed: {before} -> {after}\n"
            f"{case.as_curl_command()}\n{response.text[:500]}"
        )
    else:
        rig_watch.known = None
    if breaks_a_cross_field_rule(case, response):
        case.validate_response(response, excluded_checks=[checks.positive_data_acceptance])
    else:
        case.validate_response(response)


def breaks_a_cross_field_rule(case, response) -> bool:
    """A valid-per-schema program refused (422) only for rules between its fields."""
    if case.operation.path != PROPOSE_PATH or not positive(case) or response.status_code != 422:
        return False
    messages = [problem["message"] for problem in response.json()["detail"]]
    return all(any(rule in message for rule in CROSS_FIELD_RULES) for message in messages)
