"""A rig service on the simulated bench as a child process (for ``itbrig kiosk --sim``, tests
and the benchmarks): a free loopback port, wait until it answers, stop it on exit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port nothing listens on at this moment (loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """``itbrig serve --hal sim`` on a loopback port, as a context manager."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        time_scale: float | None = None,
        log_path: Path | str | None = None,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="itbrig-kiosk-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.time_scale = time_scale
        self.log_path = Path(log_path) if log_path else self.data_dir / "service.log"
        self.env = env
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "rig.cli", "serve", "--hal", "sim"]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.time_scale:
            command += ["--time-scale", f"{self.time_scale:g}"]
        return command + self.extra_args

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> ServiceProcess:
        """Start the service and return once ``/api/status`` answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env} if self.env else None,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the rig service exited with {self.process.returncode}; see {self.log_path}"
                )
            try:
                # Any answer below 500 means the API is up (401: it wants an access token).
                answered = httpx.get(f"{self.url}/api/status", timeout=1.0).status_code < 500
            except httpx.HTTPError:
                answered = False
            if answered:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the rig service did not answer within {timeout_s:g} s; see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send *sig* (SIGTERM: a clean stop), SIGKILL if it does not exit in time; exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *_exc_info: object) -> None:
        self.close()
