"""Command-line clients of the rig service: ``itbrig status``, ``program``, ``start``, ``alarms``...

Every command takes ``--url`` (default ``$ITBRIG_URL`` or http://127.0.0.1:8470) and ``--json``
(print the service's answer as JSON). Commands that change state log in first as ``--role`` (or
``$ITBRIG_ROLE``) with ``$ITBRIG_PIN``, else the PIN asked for on the terminal (``--pin`` works too,
though ``ps`` shows options to every user). ``itbrig pin change --role R`` asks for new PINs
the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rig.client.format import (
    DASH,
    alarm_text,
    battery_text,
    event_line,
    number,
    patient_dose,
    program_mode_text,
    rate_bench,
    rate_clinical,
    reservoir_contents,
    settings_rows,
    status_compression,
    view,
    when,
)
from rig.client.http import RigClient, ServiceRejected, ServiceUnreachable
from rig.common.inputs import InputError, read_toml

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
PIN_ENV, NEW_PIN_ENV = "ITBRIG_PIN", "ITBRIG_NEW_PIN"
REFILL_WAIT_S = 180.0  # a 40 mL fill at the drive's maximum rate takes about two minutes


def last_proposal_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "itbrig" / "last-proposal"


def _client(args: argparse.Namespace, *, login: bool) -> RigClient:
    client = RigClient(args.url)
    if login:
        role = args.role or os.environ.get("ITBRIG_ROLE") or "clinician"
        client.login(role, role_pin(role, args.pin))
    return client


def _print(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text(data))


def _status_text(status: dict[str, Any]) -> str:
    shown = view(status)
    program = shown["program"] or {}
    reservoir = shown["reservoir"]
    lines = [
        status["training_notice"],
        f"state      {status['state']}  ({status_compression(status)}, "
        f"patient time {when(status['patient_time'])})",
        f"program    {program_mode_text(status)}  {program.get('drug') or DASH}  "
        f"{number(program.get('concentration_ug_per_ml'), 0, 'µg/mL')}  "
        f"{number(program.get('dose_ug_per_day'), 1, 'µg/day')}",
        f"rate now   {rate_clinical(status['rates'])}",
        f"           {rate_bench(status['rates'])}",
        f"reservoir  {number(reservoir.get('volume_ml'), 3)} of "
        f"{number(reservoir.get('capacity_ml'), 0, 'mL')}; "
        f"low alarm {when(reservoir.get('low_alarm_at'))}; "
        f"empty {when(reservoir.get('empty_at'))}",
        f"battery    {battery_text(shown['battery'])}",
        f"           {reservoir_contents(status)}",
        f"delivered  {number(status['delivered']['volume_ml'], 4, 'mL')} by the ledger "
        f"({status['delivered']['steps']} steps); {patient_dose(status)}",
    ]
    for alarm in status["alarms"]:
        lines.append(
            f"ALARM      [{alarm['priority']}] {alarm['title']} (id {alarm['id']}): "
            f"{alarm_text(alarm)}"
        )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args, login=False) as client:
        _print(args, client.get("/api/status"), _status_text)
    return EXIT_OK


def cmd_program_propose(args: argparse.Namespace) -> int:
    program = read_toml(args.file, "program file")  # the service validates it and names each field
    with _client(args, login=True) as client:
        proposal = client.post("/api/program/propose", {"program": program})
    path = last_proposal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(proposal["proposal_id"])

    def text(p: dict[str, Any]) -> str:
        rows = settings_rows(
            p["old"], p["new"], old_program=p.get("old_program"), new_program=p.get("program")
        )
        width = max(len(label) for label, _old, _new in rows) + 2
        lines = [f"{'':{width}}{'old':>24}{'new':>24}"]
        lines += [f"{label:{width}}{old:>24}{new:>24}" for label, old, new in rows]
        lines += [f"WARNING: {w['message']}" for w in p["warnings"]]
        lines.append(f"confirm with: itbrig program confirm {p['proposal_id']}")
        return "\n".join(lines)

    _print(args, proposal, text)
    return EXIT_OK


def cmd_program_confirm(args: argparse.Namespace) -> int:
    proposal_id = args.proposal_id
    if proposal_id is None:
        path = last_proposal_path()
        if not path.exists():
            raise InputError("proposal_id: no proposal to confirm; run `itbrig program propose`")
        proposal_id = path.read_text().strip()
    with _client(args, login=True) as client:
        status = client.post(
            "/api/program/confirm",
            {"proposal_id": proposal_id, "accept_warnings": args.accept_warnings},
        )
    _print(args, status, _status_text)
    return EXIT_OK


def _post_command(path: str, body: Callable[[argparse.Namespace], Any] | None = None):
    def command(args: argparse.Namespace) -> int:
        with _client(args, login=True) as client:
            reply = client.post(path, body(args) if body else None)
        _print(args, reply, lambda r: _status_text(r) if "therapy" in r else json.dumps(r))
        return EXIT_OK

    return command


def cmd_alarms(args: argparse.Namespace) -> int:
    if args.action == "list":
        with _client(args, login=False) as client:
            alarms = client.get("/api/alarms")

        def text(data: dict[str, Any]) -> str:
            if not data["active"]:
                return "no active alarms"
            return "\n".join(
                f"{a['id']:>4} [{a['priority']}] {a['title']}: {alarm_text(a)}"
                + (" (acknowledged)" if a["acknowledged"] else "")
                for a in data["active"]
            )

        _print(args, alarms, text)
        return EXIT_OK
    with _client(args, login=True) as client:
        if args.action == "ack":
            path = (
                "/api/alarms/acknowledge-all"
                if args.alarm_id is None
                else f"/api/alarms/{args.alarm_id}/acknowledge"
            )
            reply = client.post(path)
        else:
            reply = client.post("/api/alarms/silence", {"duration_s": args.seconds})
    _print(args, reply, json.dumps)
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args, login=False) as client:
        events = client.get("/api/events", since_id=args.since_id, kind=args.kind, limit=args.limit)
    _print(
        args,
        events,
        lambda rows: "\n".join(f"{e['id']:>5} {event_line(e)}" for e in rows),
    )
    return EXIT_OK


def _fill_text(r: dict[str, Any]) -> str:
    return (
        f"filled {r['volume_ml']:g} mL at {r['concentration_ug_per_ml']:g} µg/mL;"
        f" low-reservoir alarm {r['low_alarm_at'] or 'never'}"
        + (
            "; concentration changed: program a bridge bolus, or itbrig refill no-bridge "
            "--reason TEXT, before starting"
            if r["bridge_bolus_offered"]
            else ""
        )
    )


def _wait_for_refill(client: RigClient, phase: str, timeout_s: float = REFILL_WAIT_S) -> dict:
    """Poll the status until the refill valve's move reaches *phase*; its refill block."""
    deadline = time.monotonic() + timeout_s
    while True:
        refill = client.get("/api/status")["refill"]
        if refill["phase"] == phase:
            return refill
        if time.monotonic() > deadline:
            raise ServiceRejected(504, f"refill: still {refill['phase']} after {timeout_s:g} s")
        time.sleep(0.2)


def cmd_refill(args: argparse.Namespace) -> int:
    if args.step in ("withdrawn", "fill") and args.volume_ml is None:
        raise InputError(f"volume_ml: required for the {args.step} step (mL)")
    if args.step == "no-bridge" and not args.reason:
        raise InputError("--reason: say why no bridge bolus is needed (kept in the books)")
    with _client(args, login=True) as client:
        if args.step == "no-bridge":
            reply = client.post("/api/refill/no-bridge", {"reason": args.reason})
            _print(args, reply, lambda _s: f"no bridge bolus recorded: {args.reason}")
        elif args.step == "aspirate":
            client.post("/api/refill/aspirate")
            refill = _wait_for_refill(client, "aspirated")
            _print(
                args,
                refill,
                lambda r: (
                    f"withdrawn {r['withdrawn_ml']:.3f} mL by the motor's steps"
                    + (
                        f", {r['balance_withdrawn_ml']:.3f} mL by the balance"
                        if r["balance_withdrawn_ml"] is not None
                        else ""
                    )
                    + f"; {r['verdict']['explanation']}"
                ),
            )
        elif args.step == "withdrawn":
            reply = client.post("/api/refill/withdrawn", {"withdrawn_ml": args.volume_ml})
            _print(args, reply, lambda v: v["explanation"])
        else:
            if args.concentration is None:
                raise InputError("--concentration: required for the fill step (µg/mL)")
            reply = client.post(
                "/api/refill/fill",
                {"volume_ml": args.volume_ml, "concentration_ug_per_ml": args.concentration},
            )
            if reply.get("phase") == "filling":  # the rig draws from the supply itself
                reply = _wait_for_refill(client, "filled")["result"]
            _print(args, reply, _fill_text)
    return EXIT_OK


def role_pin(role: str, given: str | None) -> str:
    """The PIN of *role*: *given* (``--pin``), else ``$ITBRIG_PIN``, else asked on the terminal."""
    return given or os.environ.get(PIN_ENV) or _ask_pin(f"{role} PIN", PIN_ENV)


def _ask_pin(prompt: str, env: str) -> str:
    """A PIN typed on the terminal without echo; scripts set ``env`` instead."""
    import getpass

    if not sys.stdin.isatty():
        raise InputError(f"{prompt}: needed, and there is no terminal to ask on (set ${env})")
    return getpass.getpass(f"{prompt}: ")


def cmd_pin_change(args: argparse.Namespace) -> int:
    """A role's new PIN: the role itself with its current PIN, or the engineer (``--by``)."""
    role = args.role
    if role is None:
        raise InputError("--role: name the role whose PIN changes (trainee, clinician, engineer)")
    by = args.by or role
    current = args.pin or os.environ.get(PIN_ENV) or _ask_pin(f"current {by} PIN", PIN_ENV)
    new_pin = os.environ.get(NEW_PIN_ENV)
    if new_pin is None:
        new_pin = _ask_pin(f"new {role} PIN (4 to 8 digits)", NEW_PIN_ENV)
        if _ask_pin(f"new {role} PIN again", NEW_PIN_ENV) != new_pin:
            raise InputError("new PIN: the two entries differ; nothing was changed")
    body = {"new_pin": new_pin}
    if by == role:
        body["old_pin"] = current
    with RigClient(args.url) as client:
        client.login(by, current)
        reply = client.request("PUT", f"/api/pins/{role}", json=body)

    def text(r: dict[str, Any]) -> str:
        warning = r["security"]["warning"]
        return f"PIN of {r['role']} changed" + (f"\nWARNING: {warning}" if warning else "")

    _print(args, reply, text)
    return EXIT_OK


def run_client_command(handler: Callable[[argparse.Namespace], int]):
    """Wrap a client command: unreachable service → exit 1, rejected request → exit 2."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ServiceUnreachable as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        except ServiceRejected as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT if 400 <= error.status_code < 500 else EXIT_FAILURE

    return wrapped


def client_options() -> argparse.ArgumentParser:
    """The options every client command takes (a parent parser): --url, --json, --role, --pin."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="rig service URL (default $ITBRIG_URL or local)")
    common.add_argument("--json", action="store_true", help="print the answer as JSON")
    common.add_argument("--role", choices=("trainee", "clinician", "engineer"), default=None)
    common.add_argument(
        "--pin",
        default=None,
        help="PIN of the role; prefer $ITBRIG_PIN or the prompt (ps shows options)",
    )
    return common


def add_client_commands(subparsers: argparse._SubParsersAction) -> None:
    common = client_options()

    def add(name: str, handler, help_text: str, parent=subparsers) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, parents=[common], help=help_text)
        parser.set_defaults(handler=run_client_command(handler))
        return parser

    add("status", cmd_status, "show the rig's status")
    program = subparsers.add_parser("program", help="propose and confirm dose programs")
    program_sub = program.add_subparsers(dest="program_command", required=True)
    add("propose", cmd_program_propose, "propose a program file (nothing changes yet)",
        program_sub).add_argument("file")  # fmt: skip
    confirm = add("confirm", cmd_program_confirm, "confirm a proposal", program_sub)
    confirm.add_argument("proposal_id", nargs="?", help="default: the last proposal made here")
    confirm.add_argument(
        "--accept-warnings", action="store_true", help="accept soft-limit warnings"
    )
    add("start", _post_command("/api/start"), "start (resume) delivery")
    add("stop", _post_command("/api/stop"), "stop delivery")
    add("resume", _post_command("/api/recovery/resume"), "resume after power-loss recovery")
    bolus = subparsers.add_parser("bolus", help="boluses")
    bolus_sub = bolus.add_subparsers(dest="bolus_command", required=True)
    add("patient", _post_command("/api/bolus/patient"), "request a patient bolus", bolus_sub)
    alarms = add("alarms", cmd_alarms, "list, acknowledge or silence alarms")
    alarms.add_argument("action", nargs="?", choices=("list", "ack", "silence"), default="list")
    alarms.add_argument("alarm_id", nargs="?", type=int, help="alarm to acknowledge (default all)")
    alarms.add_argument("--seconds", type=float, default=120.0, help="silence for (max 120)")
    refill = add(
        "refill",
        cmd_refill,
        "refill: aspirate (with a refill valve) or enter the withdrawn volume, then fill",
    )
    refill.add_argument("step", choices=("aspirate", "withdrawn", "fill", "no-bridge"))
    refill.add_argument("volume_ml", type=float, nargs="?", help="mL (withdrawn and fill steps)")
    refill.add_argument("--concentration", type=float, default=None, help="µg/mL (fill step)")
    refill.add_argument("--reason", default=None, help="why no bridge bolus (no-bridge step)")
    pin = subparsers.add_parser("pin", help="PINs of the roles")
    pin_sub = pin.add_subparsers(dest="pin_command", required=True)
    change = add(
        "change", cmd_pin_change,
        "change a role's PIN (--role R; asks for the current and the new PIN, or reads "
        f"$ITBRIG_PIN and ${NEW_PIN_ENV})",
        pin_sub,
    )  # fmt: skip
    change.add_argument(
        "--by", choices=("engineer",), default=None,
        help="set it as the engineer (the engineer's PIN instead of the role's current one)",
    )  # fmt: skip
    events = add("events", cmd_events, "show the event log")
    events.add_argument("--since-id", type=int, default=None)
    events.add_argument("--kind", default=None)
    events.add_argument("--limit", type=int, default=50)
