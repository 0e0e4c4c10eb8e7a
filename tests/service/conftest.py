"""A real rig service process on a random loopback port over the simulated bench."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rig.client import RigClient

PROJECT_DIR = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT_DIR / "examples" / "programs"
CLINICIAN_PIN = "2222"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServiceProcess:
    """One ``itbrig serve --hal sim`` child process and a clinician client of it."""

    data_dir: Path
    time_scale: float = 1440.0
    port: int = field(default_factory=free_port)
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    client: RigClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> RigClient:
        command = [
            sys.executable, "-m", "rig.cli", "serve", "--hal", "sim", "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--time-scale", str(self.time_scale),
        ]  # fmt: skip
        log = open(self.data_dir / "service.log", "ab")  # noqa: SIM115 (closed with the process)
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(command, cwd=PROJECT_DIR, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {(self.data_dir / 'service.log').read_text()}")
            try:
                httpx.get(f"{self.url}/api/status", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("service did not answer in time")
        self.client = RigClient(self.url)
        self.client.login("clinician", CLINICIAN_PIN)
        return self.client

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def service_factory(tmp_path) -> Iterator[Callable[..., ServiceProcess]]:
    """Make service processes (stopped at the end of the test)."""
    made: list[ServiceProcess] = []

    def make(data_dir: Path | None = None, **kwargs) -> ServiceProcess:
        directory = data_dir or tmp_path / f"data{len(made)}"
        directory.mkdir(parents=True, exist_ok=True)
        service = ServiceProcess(directory, **kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        if service.process is not None and service.process.poll() is None:
            service.stop()


@pytest.fixture
def service(service_factory) -> ServiceProcess:
    started = service_factory()
    started.start()
    return started


def program_json(name: str) -> dict:
    from rig.programs import load_program

    return load_program(EXAMPLES / f"{name}.toml").model_dump(mode="json")


def confirm_program(client: RigClient, program: dict) -> dict:
    proposal = client.post("/api/program/propose", {"program": program})
    return client.post(
        "/api/program/confirm",
        {"proposal_id": proposal["proposal_id"], "accept_warnings": bool(proposal["warnings"])},
    )


def wait_for(predicate: Callable[[], object], timeout_s: float, period_s: float = 0.1):
    """Poll until *predicate* returns something truthy; return it (None on timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period_s)
    return None
