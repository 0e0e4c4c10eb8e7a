"""A real rig service process on a random loopback port over the simulated bench."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rig.client.http import RigClient
from rig.client.launcher import ServiceProcess, free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
EXAMPLES = PROJECT_DIR / "examples" / "programs"
CLINICIAN_PIN = "2222"

__all__ = [
    "EXAMPLES",
    "TestService",
    "cli_of",
    "confirm_program",
    "free_port",
    "program_json",
    "wait_for",
]


class TestService(ServiceProcess):
    """A service child process with a logged-in clinician client while it runs."""

    __test__ = False  # not a test class

    def __init__(self, data_dir: Path, time_scale: float = 1440.0, **kwargs) -> None:
        super().__init__(data_dir=data_dir, time_scale=time_scale, **kwargs)
        self.client: RigClient | None = None

    def start(self, timeout_s: float = 30.0) -> RigClient:  # type: ignore[override]
        super().start(timeout_s)
        self.client = RigClient(self.url)
        self.client.login("clinician", CLINICIAN_PIN)
        return self.client

    def stop(self, sig: int | None = None) -> int | None:
        if self.client is not None:
            self.client.close()
            self.client = None
        return super().stop() if sig is None else super().stop(sig)


@pytest.fixture
def service_factory(tmp_path) -> Iterator[Callable[..., TestService]]:
    """Make service processes (stopped at the end of the test)."""
    made: list[TestService] = []

    def make(data_dir: Path | None = None, **kwargs) -> TestService:
        directory = data_dir or tmp_path / f"data{len(made)}"
        directory.mkdir(parents=True, exist_ok=True)
        service = TestService(directory, **kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        service.stop()


@pytest.fixture
def service(service_factory) -> TestService:
    started = service_factory()
    started.start()
    return started


def program_json(name: str) -> dict:
    from rig.therapy.drugs import load_program

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


def cli_of(service: TestService, monkeypatch, tmp_path: Path, capsys):
    """Run ``itbrig`` commands in this process against *service*, as a clinician:
    ``run(*argv)`` → (exit code, stdout, stderr); ``run.client`` and ``run.url`` are the
    service's."""
    from rig.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ITBRIG_URL", service.url)
    monkeypatch.setenv("ITBRIG_PIN", CLINICIAN_PIN)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.client = service.client  # type: ignore[attr-defined]
    run.url = service.url  # type: ignore[attr-defined]
    return run
