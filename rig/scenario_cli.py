"""``itbrig scenario``: list, run, follow, stop and debrief training scenarios.

``list`` reads the shipped scenarios; ``run NAME --fast`` runs one in this process on a virtual
clock (no service needed; ``--demo`` plays the scenario's model answer as the trainee); the other
commands talk to the rig service (``--url``, ``--role``, ``--pin`` as every client command).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rig.client.commands import EXIT_OK, _client, _print, client_options, run_client_command
from rig.common.inputs import InputError


def _summary_text(report: dict[str, Any]) -> str:
    lines = [
        f"{report['scenario']}: {report['title']}"
        + (f" (trainee {report['trainee']})" if report.get("trainee") else ""),
        f"score      {report['points']}/{report['max_points']} ({report['score']:.0%}); "
        f"mastery {'yes' if report['mastery'] else 'no'} (needs "
        f"{report['mastery_fraction']:.0%} and no critical miss)",
    ]
    for item in report["items"]:
        mark = "done  " if item["done"] else ("MISSED" if item["scored"] else "n/a   ")
        when = f" at {item['at_h']:.1f} h" if item["at_h"] is not None else ""
        critical = " [critical]" if item["critical"] else ""
        lines.append(f"  {mark} {item['id']}: {item['description']}{when}{critical}")
    last = report["timeline"][-1]
    lines.append(
        f"patient    at {last['at_h']:.1f} h: MAS {last['mas']}, effect {last['effect']:.2f}, "
        f"signs {', '.join(last['signs']) or 'none'}"
    )
    lines += [f"debrief    {note}" for note in report.get("debrief", [])]
    return "\n".join(lines)


def _write_files(report: dict[str, Any], args: argparse.Namespace) -> None:
    """The debrief as CSV (``--csv FILE``) and as PDF (``--pdf FILE``), when asked for."""
    if args.csv:
        from rig.service.training import debrief_csv

        Path(args.csv).write_text(debrief_csv(report), encoding="utf-8")
    if args.pdf:
        from rig.service.debrief_pdf import debrief_pdf

        Path(args.pdf).write_bytes(debrief_pdf(report))


def cmd_list(args: argparse.Namespace) -> int:
    from rig.service.api_training import scenario_summaries

    listed = scenario_summaries()
    _print(
        args,
        listed,
        lambda rows: "\n".join(
            f"{row['name']:<20} {row['duration_h']:>5g} h  {row['title']}" for row in rows
        ),
    )
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    if args.fast:
        from rig.service.training import run_fast
        from rig.therapy.scenario import load_scenario

        scenario = load_scenario(args.name)
        script = scenario.model_answer if args.demo else None
        report = run_fast(scenario, script=script, mode=args.mode, trainee=args.trainee)
        _write_files(report, args)
        _print(args, report, _summary_text)
        return EXIT_OK
    if args.demo or args.csv or args.pdf:
        raise InputError(
            "--demo, --csv and --pdf: only with --fast (on the service, the trainee acts; "
            "itbrig scenario report --csv/--pdf writes the debrief once the run has ended)"
        )
    body = {"name": args.name, "mode": args.mode, "trainee": args.trainee}
    with _client(args, login=True) as client:
        status = client.post("/api/training/scenario", body)
    _print(args, status, _status_text)
    return EXIT_OK


def _status_text(status: dict[str, Any]) -> str:
    patient = status["patient"]
    vitals = patient["vitals"]
    lines = [
        f"{status['scenario']}: {status['title']} ({status['mode']}) at {status['at_h']:.1f} of "
        f"{status['duration_h']:g} h{' (ended)' if status['finished'] else ''}",
        f"patient    MAS {patient['mas']}; HR {vitals['heart_rate_per_min']:g}/min, "
        f"RR {vitals['breathing_rate_per_min']:g}/min, {vitals['temperature_c']:.1f} °C, "
        f"{vitals['consciousness']}; signs {', '.join(patient['signs']) or 'none'}",
    ]
    lines += [f"+{m['at_h']:6.1f} h  {m['message']}" for m in status["messages"] if m["message"]]
    lines += [f"hint       {m['hint']}" for m in status["messages"] if m.get("hint")]
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args, login=False) as client:
        _print(args, client.get("/api/training/scenario"), _status_text)
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    with _client(args, login=True) as client:
        report = client.post("/api/training/scenario/stop")
    _print(args, report, _summary_text)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    with _client(args, login=False) as client:
        report = client.get("/api/training/report", index=args.index)
    _write_files(report, args)
    _print(args, report, _summary_text)
    return EXIT_OK


def cmd_act(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    for pair in args.param:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--param: {pair!r} is not KEY=VALUE")
        try:
            params[key] = json.loads(text)
        except ValueError:
            params[key] = text
    with _client(args, login=True) as client:
        reply = client.post("/api/training/actions", {"action": args.action, "params": params})
    _print(args, reply, lambda r: f"recorded {r['action']} at {r['at_h']:.2f} h")
    return EXIT_OK


def add_scenario_commands(subparsers: argparse._SubParsersAction) -> None:
    common = client_options()
    scenario = subparsers.add_parser("scenario", help="training scenarios: run, score, debrief")
    sub = scenario.add_subparsers(dest="scenario_command", required=True)

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[common], help=help_text)
        parser.set_defaults(handler=run_client_command(handler))
        return parser

    add("list", cmd_list, "the shipped scenarios (no service needed)")
    run = add("run", cmd_run, "start a scenario on the service, or run it here with --fast")
    run.add_argument("name", help="a shipped scenario (itbrig scenario list)")
    run.add_argument(
        "--fast", action="store_true", help="run here on a virtual clock to the end and score it"
    )
    run.add_argument("--demo", action="store_true", help="with --fast: play the model answer")
    run.add_argument("--mode", choices=("guided", "assessment"), default="assessment")
    run.add_argument("--trainee", default=None, help="the trainee's name (kept in the debrief)")
    run.add_argument("--csv", metavar="FILE", help="with --fast: write the debrief CSV")
    run.add_argument("--pdf", metavar="FILE", help="with --fast: write the debrief PDF")
    add("status", cmd_status, "the running scenario and the patient")
    add("stop", cmd_stop, "end the running scenario now: score and debrief")
    report = add("report", cmd_report, "a debrief kept in the books (default the latest)")
    report.add_argument("--index", type=int, default=0, help="0 the latest, 1 the one before...")
    report.add_argument("--csv", metavar="FILE", help="also write the debrief as CSV")
    report.add_argument("--pdf", metavar="FILE", help="also write the debrief as PDF")
    act = add("act", cmd_act, "record a clinical action (assess_patient, lumbar_bolus...)")
    act.add_argument("action")
    act.add_argument("--param", action="append", default=[], help="KEY=VALUE (repeatable)")
