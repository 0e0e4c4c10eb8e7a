"""Auth over a real service process: failed logins and lockouts audited, PIN changes (by the role
with its current PIN, or by the engineer; API and command line), the factory-PIN warning, and
books that only their owner can read."""

from __future__ import annotations

import sqlite3
import stat

import httpx
import pytest

from rig.cli import main

LOGIN = "/api/login"


def audit(service, action: str) -> list[dict]:
    uri = f"file:{service.data_dir / 'rig.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM audit WHERE action = ? ORDER BY id", (action,))
        return [dict(row) for row in rows]


def login(service, role: str, pin: str) -> httpx.Response:
    return httpx.post(service.url + LOGIN, json={"role": role, "pin": pin})


def change_pin(service, session: str, role: str, body: dict) -> httpx.Response:
    return httpx.put(f"{service.url}/api/pins/{role}", json=body, headers={"X-Session": session})


@pytest.mark.timeout(60)
def test_failed_logins_and_lockouts_are_audited(service):
    for _ in range(4):
        assert login(service, "trainee", "9999").status_code == 401
    assert login(service, "trainee", "9999").status_code == 429
    assert login(service, "trainee", "1111").status_code == 429  # locked, even the right PIN
    rows = [row for row in audit(service, "login") if row["role"] == "trainee"]
    assert [row["outcome"] for row in rows] == ["rejected"] * 6
    assert "attempt(s) left" in rows[0]["detail"]
    assert all("locked" in row["detail"] for row in rows[4:])
    assert all("9999" not in row["request_json"] for row in rows)  # PINs are never written
    assert login(service, "clinician", "2222").status_code == 200
    assert audit(service, "login")[-1]["outcome"] == "ok"


@pytest.mark.timeout(60)
def test_a_role_changes_its_own_pin_with_its_current_one(service):
    status = service.client.get("/api/status")
    assert status["security"]["factory_pins"] == ["trainee", "clinician", "engineer"]
    assert "factory PINs in use" in status["security"]["warning"]
    session = service.client.session_token
    # Without, or with a wrong, current PIN: refused (and the wrong one counts as a guess).
    missing = change_pin(service, session, "clinician", {"new_pin": "4826"})
    assert missing.status_code == 401 and missing.json()["detail"][0]["field"] == "old_pin"
    wrong = change_pin(service, session, "clinician", {"new_pin": "4826", "old_pin": "1234"})
    assert wrong.status_code == 401 and "4 attempt(s) left" in wrong.text
    # A factory PIN is no new PIN; another role's PIN is the engineer's business.
    factory = change_pin(service, session, "clinician", {"new_pin": "1111", "old_pin": "2222"})
    assert factory.status_code == 422
    assert "factory PINs" in factory.json()["detail"][0]["message"]
    other = change_pin(service, session, "trainee", {"new_pin": "4826", "old_pin": "1111"})
    assert other.status_code == 403
    changed = change_pin(service, session, "clinician", {"new_pin": "4826", "old_pin": "2222"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["security"]["factory_pins"] == ["trainee", "engineer"]
    assert login(service, "clinician", "2222").status_code == 401
    assert login(service, "clinician", "4826").status_code == 200
    outcomes = [(row["role"], row["outcome"]) for row in audit(service, "pins.change")]
    assert outcomes == [("clinician", "rejected")] * 3 + [("clinician", "ok")]
    assert all("4826" not in row["request_json"] for row in audit(service, "pins.change"))


@pytest.mark.timeout(60)
def test_the_engineer_sets_any_roles_pin_from_the_command_line(service, monkeypatch, capsys):
    monkeypatch.setenv("ITBRIG_URL", service.url)
    monkeypatch.setenv("ITBRIG_PIN", "3333")
    monkeypatch.setenv("ITBRIG_NEW_PIN", "57913")
    assert main(["pin", "change", "--role", "trainee", "--by", "engineer"]) == 0
    out = capsys.readouterr().out
    assert "PIN of trainee changed" in out and "clinician, engineer" in out
    assert login(service, "trainee", "57913").status_code == 200
    # The role itself, with its (new) current PIN.
    monkeypatch.setenv("ITBRIG_PIN", "57913")
    monkeypatch.setenv("ITBRIG_NEW_PIN", "246802")
    assert main(["pin", "change", "--role", "trainee"]) == 0
    assert login(service, "trainee", "246802").status_code == 200
    # A factory PIN is refused with the reason, exit code 2.
    monkeypatch.setenv("ITBRIG_PIN", "246802")
    monkeypatch.setenv("ITBRIG_NEW_PIN", "1111")
    assert main(["pin", "change", "--role", "trainee"]) == 2
    assert "factory PINs" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_books_are_readable_by_their_owner_only(service):
    data_dir = service.data_dir / "created-here"
    from rig.service.books import RigStore

    RigStore.open(data_dir / "rig.db").close()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for path in [service.data_dir / "rig.db", *service.data_dir.glob("rig.db-*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
