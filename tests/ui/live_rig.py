"""The real rig API in this process on a loopback port, over a VirtualRig (virtual clock).

For kiosk tests where a real HTTP service matters but a service process and real time do not:
start-up in a fraction of a second, and the bench moves only when the test runs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from rig.client.launcher import free_port
from rig.service.api import create_app
from rig.service.auth import Authenticator
from rig.service.virtual import VirtualRig


class LiveRig:
    """A VirtualRig with its API served on ``url``."""

    def __init__(self, rig: VirtualRig, url: str) -> None:
        self.rig = rig
        self.url = url


@contextmanager
def live_rig(data_dir: Path, access_token: str | None = None) -> Iterator[LiveRig]:
    with VirtualRig(data_dir) as rig:
        app = create_app(rig.service, Authenticator(rig.store), access_token=access_token)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
        )
        thread = threading.Thread(target=server.run, name="live-rig", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the in-process rig API did not start")
            time.sleep(0.01)
        try:
            yield LiveRig(rig, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            thread.join(timeout=5)
