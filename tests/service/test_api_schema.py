"""The served schema declares what every operation answers, successes included."""

from __future__ import annotations

from rig.service.api import create_app
from rig.service.auth import Authenticator
from rig.service.virtual import VirtualRig


def test_every_operation_declares_its_successful_body(tmp_path):
    with VirtualRig(tmp_path) as rig:
        schema = create_app(rig.service, Authenticator(rig.store)).openapi()
    bare = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = operation["responses"]["200"]["content"]
            if "application/json" not in content:  # a file: CSV or PDF
                assert content, f"{method.upper()} {path}: no media type declared"
                continue
            body = content["application/json"]["schema"]
            item = body.get("items", body)
            if "$ref" not in item:
                bare.append(f"{method.upper()} {path}: {body}")
    assert bare == []
    status = schema["components"]["schemas"]["StatusBody"]
    assert {"state", "therapy", "alarms", "storage", "security"} <= set(status["required"])
