"""The command-line clients (status, program, start/stop, alarms, refill, events)."""

from __future__ import annotations

import json

import pytest

from rig.cli import main
from tests.service.conftest import EXAMPLES, cli_of, free_port


@pytest.fixture
def cli(service, monkeypatch, tmp_path, capsys):
    return cli_of(service, monkeypatch, tmp_path, capsys)


def test_program_propose_confirm_status_stop_start(cli):
    code, out, _ = cli("program", "propose", str(EXAMPLES / "continuous.toml"))
    assert code == 0
    assert "25.00 µL/h" in out and "confirm with: itbrig program confirm" in out
    code, out, _ = cli("program", "confirm")
    assert code == 0 and "state      running" in out
    code, out, _ = cli("status", "--json")
    status = json.loads(out)
    assert status["therapy"]["settings"]["daily_dose_ug_per_day"] == 300
    assert status["time_compression"] == 1440
    assert cli("stop")[0] == 0
    assert json.loads(cli("status", "--json")[1])["state"] == "stopped"
    assert cli("start")[0] == 0
    code, out, _ = cli("events", "--kind", "program")
    assert code == 0 and "program" in out


def test_hard_limit_and_soft_limit_on_the_command_line(cli, tmp_path):
    too_much = tmp_path / "too_much.toml"
    too_much.write_text(
        'drug = "baclofen"\nconcentration_ug_per_ml = 2000\nmode = "continuous"\n'
        "dose_ug_per_day = 2500\n"
    )
    code, _, err = cli("program", "propose", str(too_much))
    assert code == 2 and "dose_ug_per_day" in err
    soft = tmp_path / "soft.toml"
    soft.write_text(
        'drug = "baclofen"\nconcentration_ug_per_ml = 2000\nmode = "continuous"\n'
        "dose_ug_per_day = 900\n"
    )
    code, out, _ = cli("program", "propose", str(soft))
    assert code == 0 and "WARNING" in out
    code, _, err = cli("program", "confirm")
    assert code == 2 and "accept_warnings" in err
    assert cli("program", "confirm", "--accept-warnings")[0] == 0


def test_refill_discrepancy_fill_and_no_bridge(cli):
    assert cli("program", "propose", str(EXAMPLES / "continuous.toml"))[0] == 0
    assert cli("program", "confirm")[0] == 0
    code, out, _ = cli("refill", "withdrawn", "17")
    assert code == 0 and "suspect over-infusion" in out
    code, out, _ = cli("alarms")
    assert "Refill discrepancy" in out
    assert cli("alarms", "ack")[0] == 0
    assert cli("alarms")[1].strip() == "no active alarms"
    code, _, err = cli("refill", "fill", "20")
    assert code == 2 and "--concentration" in err
    code, out, _ = cli("refill", "fill", "20", "--concentration", "500")
    assert code == 0 and "filled 20 mL" in out
    code, _, err = cli("refill", "no-bridge", "--reason", "no concentration change")
    assert code == 2 and "no bridge bolus is pending" in err
    # A new concentration: the start waits for a bridge or a recorded "no bridge".
    assert cli("refill", "withdrawn", "20")[0] == 0
    code, out, _ = cli("refill", "fill", "20", "--concentration", "1000")
    assert code == 0 and "itbrig refill no-bridge --reason" in out
    code, _, err = cli("start")
    assert code == 2 and "program a bridge bolus" in err
    assert cli("refill", "no-bridge")[0] == 2  # the reason is required
    code, out, _ = cli("refill", "no-bridge", "--reason", "catheter replaced and primed")
    assert code == 0 and "no bridge bolus recorded" in out
    assert cli("start")[0] == 0


def test_wrong_pin_unreachable_service_and_silence_limit(cli, monkeypatch):
    assert cli("alarms", "silence", "--seconds", "600")[0] == 2
    monkeypatch.setenv("ITBRIG_PIN", "9999")
    code, _, err = cli("stop")
    assert code == 2 and "pin" in err
    monkeypatch.setenv("ITBRIG_URL", f"http://127.0.0.1:{free_port()}")
    code, _, err = cli("status")
    assert code == 1 and "does not answer" in err


def test_pin_is_asked_on_the_terminal_never_needed_as_an_option(cli, monkeypatch):
    import getpass
    import sys

    monkeypatch.delenv("ITBRIG_PIN")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = cli("stop")
    assert code == 2 and "clinician PIN" in err and "$ITBRIG_PIN" in err
    asked: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: asked.append(prompt) or "2222")
    assert cli("stop")[0] == 0
    assert asked == ["clinician PIN: "]


def test_serve_beyond_loopback_needs_explicit_option_and_token(capsys, monkeypatch):
    monkeypatch.delenv("ITBRIG_ACCESS_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--allow-remote"]) == 2
    assert "access token" in capsys.readouterr().err
    assert main(["serve", "--time-scale", "0.5"]) == 2
    assert "--time-scale" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_access_token_is_required_on_every_request_when_set(tmp_path):
    import httpx

    from rig.client.launcher import ServiceProcess

    token_file = tmp_path / "access-token"
    token_file.write_text("s3cret-token-of-24-chars\n")
    token_file.chmod(0o600)
    args = ["--allow-remote", "--access-token-file", str(token_file)]
    with ServiceProcess(data_dir=tmp_path / "books", extra_args=args) as service:
        # ServiceProcess waits for /api/status: it answers 401 without the token, so wait here.
        assert httpx.get(f"{service.url}/api/status").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{service.url}/api/status", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret-token-of-24-chars"}
        assert httpx.get(f"{service.url}/api/status", headers=right).status_code == 200


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--access-token", "a-long-enough-token-123"], {}, "shows in `ps`"),
        ([], {"ITBRIG_ACCESS_TOKEN": "short"}, "at least 16"),
        ([], {"ITBRIG_ACCESS_TOKEN": "spaces are not allowed ok"}, "visible ASCII"),
        (["--access-token-file", "/nonexistent/token"], {}, "cannot read"),
    ],
)
def test_access_tokens_come_from_a_file_or_the_environment_and_are_long(
    args, env, message, capsys, monkeypatch
):
    monkeypatch.delenv("ITBRIG_ACCESS_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--port", str(free_port()), *args]) == 2
    assert message in capsys.readouterr().err
