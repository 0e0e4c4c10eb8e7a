"""Benchmark: the rig service's API latency under load, fault detection latency, CPU and memory.

Starts real ``itbrig serve --hal sim`` processes on free loopback ports (×1440), logged in as
clinician, with the continuous example program (300 µg/day at 500 µg/mL) confirmed and infusing:

1. API latency: GET /api/status and POST /api/program/propose at 50 requests/s each, open loop
   (absolute send deadlines, one thread per endpoint; sends more than 1 ms behind are counted
   late). Goal p99 ≤ 20 ms.
2. Fault detection: one fresh service per fault class; inject once the flow monitor has settled,
   poll /api/status every 50 ms until the expected alarm is active. Goal: every fault within
   30 bench seconds.
3. Resources: CPU % of one core and resident memory of the service process, at rest (stopped,
   and infusing without API load) and under the load of (1). Goal: under 5 % of one core at rest.
4. Hostile load: a service with an access token, infusing; each row sends 200 requests/s for
   ``--hostile-seconds`` (open loop, from threads of this process): bodies at the size limit,
   1000 objects at the limit (the costliest parse allowed), 21 000 tiny lists (refused before
   parsing), malformed bodies (not UTF-8, broken JSON, nested 32 000 deep), bodies far over the
   limit (16 MB declared; 100 MB streamed after the headers, as fast as the client can), all of
   these without the token, and everything mixed. Before each row the delivery loop's timing is
   reset (engineer, ``POST /api/diagnostics/loop/reset``); after it ``loop`` in the status gives
   the longest gap between two loop ticks (period 50 ms), the longest tick, how late the loop
   woke and the latest step, and the alarm history says whether anything was raised. A 50 ms
   sleeper in a process of its own shows how late the machine alone wakes a thread meanwhile
   (the 2-core machine runs the load client too). Goal: no gap over 100 ms, no alarm.

    .venv/bin/python bench/service.py [--seconds 20] [--rate 50] [--cpu-seconds 30]
                                      [--skip-latency] [--skip-faults] [--skip-resources]
                                      [--skip-hostile] [--hostile-seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from rig.client.http import RigClient
from rig.client.launcher import ServiceProcess
from rig.therapy.drugs import load_program

PROJECT_DIR = Path(__file__).resolve().parents[1]
PROGRAM_FILE = PROJECT_DIR / "examples" / "programs" / "continuous.toml"
TIME_SCALE = 1440.0
CLINICIAN_PIN = "2222"
SETTLE_S = 9.0  # the monitor's settle time plus one full window (bench s)
FREE_FLOW_SETTLE_S = 10.0  # after stopping: the line drains and a stopped window fills
POLL_S = 0.05
LATE_S = 0.001
LATENCY_GOAL_MS = 20.0
DETECTION_GOAL_S = 30.0
CPU_GOAL_PERCENT = 5.0


@dataclass(frozen=True)
class FaultCase:
    name: str
    fault: dict[str, Any]
    alarm: str
    while_stopped: bool = False


FAULTS = (
    FaultCase("occlusion", {"occlusion_fraction": 1.0}, "no_flow"),
    FaultCase("leak", {"leak_fraction": 0.3}, "under_infusion"),
    FaultCase("stall", {"motor_stalled": True}, "no_flow"),
    FaultCase("slipping drive", {"slip_fraction": 0.3}, "under_infusion"),
    FaultCase("sensor dropout", {"sensor_dropout": True}, "sensor_fault"),
    FaultCase("air", {"air_bubble_ul": 200.0}, "air_in_line"),
    FaultCase("runaway", {"spurious_steps_per_s": 1500.0}, "runaway"),
    FaultCase("sensor bias", {"sensor_bias_ul_per_min": 100.0}, "over_infusion"),
    FaultCase(
        "free flow while stopped",
        {"free_flow_ul_per_min": 50.0},
        "flow_while_stopped",
        while_stopped=True,
    ),
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def program_json() -> dict[str, Any]:
    return load_program(PROGRAM_FILE).model_dump(mode="json")


def clinician(service: ServiceProcess) -> RigClient:
    client = RigClient(service.url)
    client.login("clinician", CLINICIAN_PIN)
    return client


def confirm(client: RigClient, program: dict[str, Any]) -> None:
    proposal = client.post("/api/program/propose", {"program": program})
    client.post(
        "/api/program/confirm",
        {"proposal_id": proposal["proposal_id"], "accept_warnings": bool(proposal["warnings"])},
    )


def active_codes(client: RigClient) -> list[str]:
    return [alarm["code"] for alarm in client.get("/api/status")["alarms"]]


def infusing_service(client: RigClient) -> None:
    """Confirm the continuous program and wait until the flow monitor has settled."""
    confirm(client, program_json())
    time.sleep(SETTLE_S)
    status = client.get("/api/status")
    if status["state"] != "running" or status["alarms"]:
        raise RuntimeError(f"not infusing cleanly: {status['state']}, {status['alarms']}")


# -- 1. API latency -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One endpoint's open-loop run."""

    name: str
    latencies_s: list[float] = field(default_factory=list)
    late: int = 0
    worst_late_s: float = 0.0
    errors: int = 0
    elapsed_s: float = 0.0


def open_loop(
    name: str,
    send: Callable[[httpx.Client], httpx.Response],
    client: httpx.Client,
    rate: float,
    seconds: float,
    start_at: float,
) -> LoadResult:
    """Send at absolute deadlines ``start_at + i / rate``; time each request from its send."""
    result = LoadResult(name)
    count = round(rate * seconds)
    for index in range(count):
        deadline = start_at + index / rate
        delay = deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.perf_counter()
        if sent - deadline > LATE_S:
            result.late += 1
            result.worst_late_s = max(result.worst_late_s, sent - deadline)
        try:
            response = send(client)
            ok = response.status_code < 400
        except httpx.HTTPError:
            ok = False
        result.latencies_s.append(time.perf_counter() - sent)
        result.errors += not ok
    result.elapsed_s = time.perf_counter() - start_at
    return result


def run_load(service: ServiceProcess, token: str, rate: float, seconds: float) -> list[LoadResult]:
    """Status and propose, each at *rate* requests/s from its own thread and connection."""
    body = {"program": program_json()}
    headers = {"X-Session": token}
    senders: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "GET /api/status": lambda http: http.get("/api/status"),
        "POST /api/program/propose": lambda http: http.post(
            "/api/program/propose", json=body, headers=headers
        ),
    }
    results: dict[str, LoadResult] = {}
    clients = {name: httpx.Client(base_url=service.url, timeout=5.0) for name in senders}
    for name, http in clients.items():  # open the connections before the clock starts
        senders[name](http).raise_for_status()
    start_at = time.perf_counter() + 0.1

    def worker(name: str) -> None:
        results[name] = open_loop(name, senders[name], clients[name], rate, seconds, start_at)

    threads = [threading.Thread(target=worker, args=(name,), name=name) for name in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for http in clients.values():
        http.close()
    return [results[name] for name in senders]


def print_latency(results: list[LoadResult], rate: float, seconds: float) -> None:
    print(f"## API latency under load ({rate:g} + {rate:g} requests/s, {seconds:g} s, open loop)\n")
    print("| endpoint | requests | errors | late sends | p50 ms | p99 ms | max ms | requests/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in results:
        ms = [value * 1000 for value in row.latencies_s]
        late = f"{row.late}" + (f" (worst {row.worst_late_s * 1000:.1f} ms)" if row.late else "")
        print(
            f"| {row.name} | {len(ms)} | {row.errors} | {late} | {percentile(ms, 0.5):.1f} | "
            f"{percentile(ms, 0.99):.1f} | {max(ms):.1f} | {len(ms) / row.elapsed_s:.1f} |"
        )
    worst = max(percentile([v * 1000 for v in row.latencies_s], 0.99) for row in results)
    verdict = "meets" if worst <= LATENCY_GOAL_MS else "MISSES"
    print(f"\nworst p99 {worst:.1f} ms: {verdict} the goal of ≤ {LATENCY_GOAL_MS:g} ms\n")


# -- 3. resources ---------------------------------------------------------------------------------


@dataclass
class Usage:
    label: str
    window_s: float
    cpu_percent: float
    rss_mb: float
    client_cpu_percent: float


def measure_usage(pid: int, label: str, during: Callable[[], Any]) -> tuple[Usage, Any]:
    """CPU % (of one core) and RSS of *pid* over the run of *during*, and its result."""
    service = psutil.Process(pid)
    here = psutil.Process()
    service.cpu_percent(None)
    here.cpu_percent(None)
    started = time.perf_counter()
    outcome = during()
    window_s = time.perf_counter() - started
    usage = Usage(
        label,
        window_s,
        service.cpu_percent(None),
        service.memory_info().rss / 2**20,
        here.cpu_percent(None),
    )
    return usage, outcome


def print_usage(rows: list[Usage]) -> None:
    print("## Service resources while infusing (×1440)\n")
    print("| condition | window s | service CPU % (one core) | service RSS MB | client CPU % |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.label} | {row.window_s:.0f} | {row.cpu_percent:.1f} | {row.rss_mb:.1f} | "
            f"{row.client_cpu_percent:.1f} |"
        )
    for rest in (row for row in rows if row.label.startswith("at rest")):
        verdict = "meets" if rest.cpu_percent < CPU_GOAL_PERCENT else "MISSES"
        print(
            f"\n{rest.label}: {rest.cpu_percent:.1f} % of one core: {verdict} the goal of "
            f"< {CPU_GOAL_PERCENT:g} %"
        )
    print()


def latency_and_resources(args: argparse.Namespace) -> None:
    with ServiceProcess(time_scale=TIME_SCALE) as service:
        assert service.process is not None
        pid = service.process.pid
        with clinician(service) as client:
            infusing_service(client)
            usage: list[Usage] = []
            if not args.skip_resources:
                client.post("/api/stop")
                stopped, _ = measure_usage(
                    pid, "at rest, stopped", lambda: time.sleep(args.cpu_seconds)
                )
                client.post("/api/start")
                time.sleep(SETTLE_S)
                rest, _ = measure_usage(
                    pid, "at rest, infusing", lambda: time.sleep(args.cpu_seconds)
                )
                usage += [stopped, rest]
            if not args.skip_latency:
                assert client.session_token is not None
                loaded, results = measure_usage(
                    pid,
                    f"under {args.rate:g} + {args.rate:g} requests/s",
                    lambda: run_load(service, client.session_token, args.rate, args.seconds),
                )
                usage.append(loaded)
                print_latency(results, args.rate, args.seconds)
                status = client.get("/api/status")
                alarms = [alarm["code"] for alarm in status["alarms"]] or "none"
                print(f"after the load: state {status['state']}, alarms {alarms}\n")
            if usage:
                print_usage(usage)


# -- 2. fault detection ---------------------------------------------------------------------------


@dataclass
class Detection:
    case: FaultCase
    bench_s: float | None
    time_compression: float
    clean_before: bool


def detect(case: FaultCase) -> Detection:
    """A fresh service: infuse (or stop), inject the fault, time until its alarm is active."""
    with ServiceProcess(time_scale=TIME_SCALE) as service, clinician(service) as client:
        if case.while_stopped:
            confirm(client, program_json())
            time.sleep(2.0)
            client.post("/api/stop")
            time.sleep(FREE_FLOW_SETTLE_S)
        else:
            confirm(client, program_json())
            time.sleep(SETTLE_S)
        status = client.get("/api/status")
        clean = not status["alarms"]
        injected_at = time.perf_counter()
        client.post("/api/faults", case.fault)
        deadline = injected_at + 2 * DETECTION_GOAL_S
        detected_s = None
        while time.perf_counter() < deadline:
            if case.alarm in active_codes(client):
                detected_s = time.perf_counter() - injected_at
                break
            time.sleep(POLL_S)
        return Detection(case, detected_s, status["time_compression"], clean)


def faults() -> None:
    print(f"## Fault detection latency (×{TIME_SCALE:g}, poll every {POLL_S * 1000:.0f} ms)\n")
    print("| fault | injected | expected alarm | bench s | patient min |")
    print("|---|---|---|---:|---:|")
    worst = 0.0
    for case in FAULTS:
        row = detect(case)
        injected = ", ".join(f"{key} {value}" for key, value in case.fault.items())
        if not row.clean_before:
            injected += " (alarm active before)"
        if row.bench_s is None:
            worst = float("inf")
            print(f"| {case.name} | {injected} | {case.alarm} | not detected | – |", flush=True)
            continue
        worst = max(worst, row.bench_s)
        patient_min = row.bench_s * row.time_compression / 60
        print(
            f"| {case.name} | {injected} | {case.alarm} | {row.bench_s:.2f} | {patient_min:.0f} |",
            flush=True,
        )
    verdict = "meets" if worst <= DETECTION_GOAL_S else "MISSES"
    print(f"\nslowest {worst:.2f} bench s: {verdict} the goal of ≤ {DETECTION_GOAL_S:g} bench s\n")


# -- 4. hostile load ------------------------------------------------------------------------------

HOSTILE_TOKEN = "bench-hostile-token-0123456789"
HOSTILE_RATE = 200.0
HOSTILE_THREADS = 8
STALL_GOAL_S = 0.100
MAX_BODY = 64 * 1024


def _at_limit() -> bytes:
    body = b'{"program": "' + b"x" * (MAX_BODY - 15) + b'"}'
    assert len(body) == MAX_BODY
    return body


def _wide_at_limit() -> bytes:
    body = b"[" + b",".join([b"[]"] * ((MAX_BODY - 2) // 3)) + b"]"
    return body[:MAX_BODY]


def _containers_at_limit() -> bytes:
    """1000 objects of numbers and text (under the 1024-container cap), 64 KiB in all."""
    item = b'{"dose_ug": 1.5, "start": "08:00", "note": "' + b"n" * 10 + b'"}'
    body = b'{"program": [' + b",".join([item] * 1000) + b"]}"
    filler = MAX_BODY - len(body) - len(b', "x": ""')
    return body[:-1] + b', "x": "' + b"f" * filler + b'"}'


def _deep() -> bytes:
    return b"[" * (MAX_BODY // 2) + b"]" * (MAX_BODY // 2)


@dataclass(frozen=True)
class Hostile:
    """One kind of hostile request: method, path, body, with the token or not; ``declared`` sends
    only the headers of a body that large (refused before it is read), on a raw socket."""

    label: str
    path: str
    body: bytes
    token: bool = True
    declared: int | None = None
    streamed: bool = False
    """Send all *declared* bytes after the headers (as long as the service reads them)."""


def hostile_requests() -> dict[str, list[Hostile]]:
    propose = "/api/program/propose"
    limit, wide = _at_limit(), _wide_at_limit()
    malformed = [
        Hostile("not UTF-8", "/api/login", b"\xff" * MAX_BODY),
        Hostile("broken JSON", propose, b'{"program": {' * (MAX_BODY // 13)),
        Hostile("32 000 deep", propose, _deep()),
    ]
    oversize = [Hostile("16 MB declared", propose, b"", declared=16 * 2**20)]
    streamed = [
        Hostile("100 MB sent", propose, b"", declared=100 * 2**20, streamed=True),
        Hostile("100 MB sent, no token", propose, b"", False, 100 * 2**20, streamed=True),
    ]
    without = [
        Hostile("at the limit, no token", propose, limit, token=False),
        Hostile("16 MB declared, no token", propose, b"", token=False, declared=16 * 2**20),
        Hostile("broken JSON, no token", propose, malformed[1].body, token=False),
    ]
    rows = {
        "bodies at the limit (64 KiB of JSON), token": [Hostile("at the limit", propose, limit)],
        "1000 objects at the limit (costliest allowed parse), token": [
            Hostile("1000 objects", propose, _containers_at_limit())
        ],
        "21 000 lists at the limit (refused before parsing), token": [
            Hostile("wide", propose, wide)
        ],
        "malformed (not UTF-8, broken, 32 000 deep), token": malformed,
        "16 MB declared (refused from the headers), token": oversize,
        "100 MB bodies streamed after the headers, with and without the token": streamed,
        "all of these without the token": without,
    }
    rows["everything above, mixed"] = [kind for kinds in rows.values() for kind in kinds]
    return rows


def _send_declared(port: int, kind: Hostile, headers: dict[str, str]) -> int:
    """Headers claiming *kind.declared* bytes and nothing else; the status answered."""
    lines = [f"POST {kind.path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"Content-Length: {kind.declared}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        if kind.streamed and kind.declared:
            chunk = b"x" * 2**20
            with contextlib.suppress(OSError):  # the service may close once it has answered
                for _ in range(kind.declared // len(chunk)):
                    sock.sendall(chunk)
        answer = sock.recv(4096)
    return int(answer.split(b" ")[1])


def _hostile_worker(
    service: ServiceProcess,
    kinds: list[Hostile],
    session: dict[str, str],
    rate: float,
    seconds: float,
    start_at: float,
    offset: int,
    statuses: Counter,
    lock: threading.Lock,
) -> None:
    count = round(rate * seconds)
    local: Counter = Counter()
    with httpx.Client(base_url=service.url, timeout=10.0) as http:
        for index in range(count):
            delay = start_at + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            kind = kinds[(index + offset) % len(kinds)]
            headers = dict(session) if kind.token else {}
            try:
                if kind.declared is not None:
                    status = _send_declared(service.port, kind, headers)
                else:
                    headers["Content-Type"] = "application/json"
                    status = http.post(kind.path, content=kind.body, headers=headers).status_code
            except (httpx.HTTPError, OSError):
                status = 0
            local[status] += 1
    with lock:
        statuses.update(local)


@dataclass
class HostileRow:
    label: str
    requests: int
    statuses: Counter
    loop: dict[str, Any]
    alarms: list[str]
    state: str
    machine_late_s: float


SLEEPER = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
worst = 0.0
while time.monotonic() < end:
    due = time.monotonic() + 0.05
    time.sleep(0.05)
    worst = max(worst, time.monotonic() - due)
print(worst)
"""


def machine_noise(seconds: float) -> subprocess.Popen:
    """A 50 ms sleeper in a process of its own: how late the machine alone wakes a thread."""
    return subprocess.Popen(
        [sys.executable, "-c", SLEEPER, str(seconds)], stdout=subprocess.PIPE, text=True
    )


def hostile_row(
    service: ServiceProcess,
    engineer: RigClient,
    label: str,
    kinds: list[Hostile],
    session: dict[str, str],
    seconds: float,
) -> HostileRow:
    """Reset the loop figures, send *kinds* at 200 requests/s for *seconds*, read the figures."""
    history = len(engineer.get("/api/alarms")["history"])
    engineer.post("/api/diagnostics/loop/reset")
    control = machine_noise(seconds + 0.2)
    statuses: Counter = Counter()
    lock = threading.Lock()
    start_at = time.perf_counter() + 0.2
    rate = HOSTILE_RATE / HOSTILE_THREADS
    threads = [
        threading.Thread(
            target=_hostile_worker,
            args=(service, kinds, session, rate, seconds, start_at, n, statuses, lock),
        )
        for n in range(HOSTILE_THREADS if kinds else 0)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not kinds:
        time.sleep(seconds)
    status = engineer.get("/api/status")
    alarms = engineer.get("/api/alarms")["history"]
    raised = [alarm["code"] for alarm in alarms[: len(alarms) - history]]
    requests = sum(statuses.values())
    machine_late_s = float(control.communicate()[0])
    return HostileRow(
        label, requests, statuses, status["loop"], raised, status["state"], machine_late_s
    )


def hostile(args: argparse.Namespace) -> None:
    env = {"ITBRIG_ACCESS_TOKEN": HOSTILE_TOKEN, "ITBRIG_TOKEN": HOSTILE_TOKEN}
    os.environ.update(env)  # the clients here send it too
    results = []
    with (
        ServiceProcess(time_scale=TIME_SCALE, env=env) as service,
        clinician(service) as client,
        RigClient(service.url) as engineer,
    ):
        engineer.login("engineer", "3333")
        infusing_service(client)
        session = {"Authorization": f"Bearer {HOSTILE_TOKEN}"}
        session["X-Session"] = client.session_token or ""
        rows: list[tuple[str, list[Hostile]]] = [("no load (baseline)", [])]
        rows += list(hostile_requests().items())
        for label, kinds in rows:
            row = hostile_row(service, engineer, label, kinds, session, args.hostile_seconds)
            results.append(row)
            print(f"  {label}: done", flush=True)
            if row.state != "running":  # an alarm stopped it: the next row starts infusing
                engineer.post("/api/alarms/acknowledge-all")
                engineer.post("/api/start")
                time.sleep(SETTLE_S)
    print_hostile(results, args.hostile_seconds)


def print_hostile(rows: list[HostileRow], seconds: float) -> None:
    print(
        f"## Hostile load ({HOSTILE_RATE:g} requests/s, {seconds:g} s per row, x{TIME_SCALE:g})\n"
    )
    print(
        "| load | requests | answers | longest loop gap ms | longest tick ms | loop woken late ms "
        "| latest step ms | machine woken late ms | alarms | state after |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---|---|")
    worst = 0.0
    any_alarm = False
    for row in rows:
        loop = row.loop
        worst = max(worst, loop["max_gap_s"])
        any_alarm = any_alarm or bool(row.alarms)
        answers = ", ".join(f"{code}: {n}" for code, n in sorted(row.statuses.items())) or "–"
        lateness = loop["max_step_lateness_s"]
        print(
            f"| {row.label} | {row.requests} | {answers} | {loop['max_gap_s'] * 1000:.0f} | "
            f"{loop['max_tick_s'] * 1000:.0f} | {loop['max_wake_late_s'] * 1000:.0f} | "
            f"{'–' if lateness is None else f'{lateness * 1000:.1f}'} | "
            f"{row.machine_late_s * 1000:.0f} | {', '.join(row.alarms) or 'none'} | {row.state} |"
        )
    verdict = "meets" if worst <= STALL_GOAL_S and not any_alarm else "MISSES"
    print(
        f"\nlongest gap between loop ticks {worst * 1000:.0f} ms (period 50 ms), "
        f"{'alarms raised' if any_alarm else 'no alarm'}: {verdict} the goal of ≤ "
        f"{STALL_GOAL_S * 1000:.0f} ms and no alarm\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load run")
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s per endpoint")
    parser.add_argument("--cpu-seconds", type=float, default=30.0, help="at-rest CPU window")
    parser.add_argument("--skip-latency", action="store_true", help="no load run")
    parser.add_argument("--skip-faults", action="store_true", help="no fault detection runs")
    parser.add_argument("--skip-resources", action="store_true", help="no at-rest CPU window")
    parser.add_argument("--skip-hostile", action="store_true", help="no hostile-load rows")
    parser.add_argument(
        "--hostile-seconds", type=float, default=10.0, help="length of each hostile-load row"
    )
    args = parser.parse_args()
    print(
        f"rig service on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, simulated bench ×{TIME_SCALE:g}\n"
    )
    if not (args.skip_latency and args.skip_resources):
        latency_and_resources(args)
    if not args.skip_faults:
        faults()
    if not args.skip_hostile:
        hostile(args)


if __name__ == "__main__":
    main()
