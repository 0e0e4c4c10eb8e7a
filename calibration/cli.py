"""``itbrig calibrate volume|accuracy|...``: run a calibration procedure.

``--fast`` runs it on the simulated bench of ``--config`` under a virtual clock; otherwise the
rig service runs it on its bench in real time. A progress bar with ETA goes to stderr (when it is
a terminal), then a results table or, with ``--json``, one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from calibration.bench import CalibrationError, Progress
from calibration.models import Params
from calibration.registry import PROCEDURES, Procedure
from calibration.report import Limits, load_limits, results_csv, samples_csv
from rig.client.commands import role_pin, run_client_command
from rig.common.inputs import InputError

BAR_WIDTH = 30
POLL_S = 1.0


def add_calibrate_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``itbrig calibrate`` on the ``itbrig`` command line."""
    calibrate = subparsers.add_parser(
        "calibrate", help="calibration procedures for engineers (volume, accuracy, ...)"
    )
    procedures = calibrate.add_subparsers(dest="procedure", required=True)
    for procedure in PROCEDURES.values():
        sub = procedures.add_parser(procedure.name, help=procedure.title)
        sub.add_argument("--config", metavar="FILE", help="rig.toml (default: the shipped one)")
        sub.add_argument(
            "--fast",
            action="store_true",
            help="run on the simulated bench under a virtual clock, as fast as the CPU allows",
        )
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        sub.add_argument("--save", metavar="FILE", help="save the result as JSON")
        sub.add_argument(
            "--report",
            metavar="DIR",
            help="write the run's record there: samples.csv, results.csv, report.pdf, run.json",
        )
        sub.add_argument("--limits", metavar="FILE", help="pass/fail limits of the report (TOML)")
        sub.add_argument("--url", help="rig service URL, without --fast (default $ITBRIG_URL)")
        sub.add_argument(
            "--pin",
            help="the engineer's PIN, without --fast; prefer $ITBRIG_PIN or the prompt",
        )
        sub.add_argument(
            "--use-calibration",
            metavar="FILE",
            help="run with the µL per step of a saved volume calibration (--fast only)",
        )
        for name, field in procedure.params.model_fields.items():
            list_field = _is_list(field.annotation)
            sub.add_argument(
                "--" + name.replace("_", "-"),
                dest=f"param_{name}",
                metavar="N,N,..." if list_field else "N",
                required=field.is_required(),
                help=(field.description or name.replace("_", " "))
                + (
                    ""
                    if field.is_required()
                    else f" (default {_default(field.get_default(call_default_factory=True))})"
                ),
            )
        sub.set_defaults(handler=run_client_command(run_calibrate), procedure_spec=procedure)


def _is_list(annotation: Any) -> bool:
    """A list parameter (possibly optional): given on the command line as N,N,..."""
    return typing.get_origin(annotation) is list or any(
        typing.get_origin(arg) is list for arg in typing.get_args(annotation)
    )


def _default(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(f"{v:g}" for v in value)
    return "none" if value is None else f"{value:g}"


def _number(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--{option}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"--{option}: {text!r} is not a finite number")
    return value


def parameters(procedure: Procedure, args: argparse.Namespace) -> dict[str, Any]:
    """The procedure's parameters given on the command line, as numbers."""
    values: dict[str, Any] = {}
    for name, field in procedure.params.model_fields.items():
        text = getattr(args, f"param_{name}")
        if text is None:
            continue
        option = name.replace("_", "-")
        if _is_list(field.annotation):
            values[name] = [_number(option, part) for part in text.split(",") if part.strip()]
        else:
            values[name] = _number(option, text)
    return values


def load_calibration(path: str) -> float:
    """µL per step from a volume-calibration result saved with ``--save``."""
    try:
        saved = json.loads(Path(path).read_text())
    except OSError as error:
        raise InputError(f"--use-calibration: cannot read {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"--use-calibration: {path} is not JSON ({error})") from None
    value = saved.get("ul_per_step_measured") if isinstance(saved, dict) else None
    if saved.get("procedure") != "volume" or not isinstance(value, int | float) or value <= 0:
        raise InputError(
            f"--use-calibration: {path} is not a saved volume calibration (itbrig calibrate "
            "volume --save FILE) with a positive ul_per_step_measured"
        )
    return float(value)


class ProgressBar:
    """``[#####-----]  42 %  ETA 1:23  message`` on one terminal line (nothing if not a tty)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.started = time.monotonic()

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        fraction = progress.fraction
        filled = round(fraction * BAR_WIDTH)
        wall_s = time.monotonic() - self.started
        eta_s = wall_s / fraction * (1 - fraction) if fraction > 0.01 else math.nan
        eta = "--:--" if math.isnan(eta_s) else f"{int(eta_s // 60)}:{int(eta_s % 60):02d}"
        line = f"\r[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {fraction * 100:3.0f} %  ETA {eta}"
        self.stream.write(f"{line}  {progress.message[:40]:<40}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def write_record(folder: Path, run: dict[str, Any], limits: Limits) -> None:
    """A run's record as files: raw samples and results (CSV), the PDF report, the run (JSON)."""
    from calibration.pdf import pdf_report

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "samples.csv").write_text(samples_csv(run))
    (folder / "results.csv").write_text(results_csv(run, limits))
    (folder / "report.pdf").write_bytes(pdf_report(run, limits))
    (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")


def run_on_service(args: argparse.Namespace, procedure: Procedure, params: Params) -> int:
    """Run *procedure* on the rig service's bench in real time, following its progress;
    Ctrl-C cancels the run (the motor stops and the catheter is opened)."""
    from calibration.report import result_table_lines
    from rig.client.http import RigClient

    if args.use_calibration or args.config:
        raise InputError(
            "--use-calibration and --config are for --fast runs; the rig service runs with its "
            "own configuration and the calibration in force"
        )
    pin = role_pin("engineer", args.pin)
    bar = ProgressBar()
    try:
        with RigClient(args.url) as client:
            client.login("engineer", pin)
            body = {"procedure": procedure.name, "params": params.model_dump(mode="json")}
            run_id = client.post("/api/calibration/runs", body)["run_id"]
            job = _follow(client, bar)
            if job["state"] != "done":
                print(f"error: run {run_id} {job['state']}: {job['message']}", file=sys.stderr)
                return 1
            if args.report:
                folder = Path(args.report)
                folder.mkdir(parents=True, exist_ok=True)
                for name in ("samples.csv", "results.csv", "report.pdf"):
                    data = client.download(f"/api/calibration/runs/{run_id}/{name}")
                    (folder / name).write_bytes(data)
    finally:
        bar.close()
    result = job["result"]
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else "\n".join(result_table_lines(result)))
    return 0


def _follow(client: Any, bar: ProgressBar) -> dict[str, Any]:
    """Poll the run until it ends; Ctrl-C cancels it."""
    try:
        while True:
            job = client.get("/api/calibration")["job"]
            bar(Progress(job["fraction"], job["eta_s"] or 0.0, job["message"]))
            if job["state"] != "running":
                return job
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        client.post("/api/calibration/cancel")
        raise


def run_calibrate(args: argparse.Namespace) -> int:
    from calibration.report import result_table
    from rig.service.config import load_config

    procedure: Procedure = args.procedure_spec
    params = procedure.parse(parameters(procedure, args))
    if not args.fast:
        return run_on_service(args, procedure, params)
    config = load_config(args.config)
    ul_per_step = load_calibration(args.use_calibration) if args.use_calibration else None
    from calibration.fast import simulated_bench

    limits = load_limits(args.limits)
    bar = ProgressBar()
    samples: list[dict[str, Any]] = []

    def progress(update: Progress) -> None:
        bar(update)
        if update.sample is not None:
            samples.append(update.sample)

    started = datetime.now(UTC)
    try:
        with simulated_bench(config, ul_per_step=ul_per_step, progress_fn=progress) as cb:
            in_force = {"ul_per_step": cb.ul_per_step, "source": args.use_calibration or "nominal"}
            result = procedure.run(cb, params)
    except CalibrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    document = result.model_dump(mode="json")
    if args.report:
        run = {
            "procedure": procedure.name,
            "state": "done",
            "role": "engineer (simulated bench, --fast)",
            "started_at_utc": started.isoformat(timespec="seconds"),
            "finished_at_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "params": params.model_dump(mode="json"),
            "in_force": in_force,
            "samples": samples,
            "result": document,
        }
        write_record(Path(args.report), run, limits)
    if args.save:
        Path(args.save).write_text(json.dumps(document, indent=2) + "\n")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(result_table(result))
    return 0
