"""Off the UI thread: API calls on a worker pool and the telemetry WebSocket on its own thread.

Results come back through *post*, which hands a callable to the UI thread (the kiosk passes
``Clock.schedule_once``); nothing here touches a widget.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from rig.client.http import RigClient

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]
Call = Callable[[RigClient], Any]


def kivy_post(callback: Callable[[], None]) -> None:
    """Run *callback* on the Kivy UI thread at the next frame."""
    from kivy.clock import Clock

    Clock.schedule_once(lambda _dt: callback(), 0)


class ApiWorker:
    """Runs rig-client calls on worker threads and posts each outcome back to the UI thread."""

    def __init__(self, client: RigClient, post: Post = kivy_post, workers: int = 2) -> None:
        self.client = client
        self._post = post
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiosk-api")

    def submit(
        self,
        call: Call,
        on_done: Callable[[Any], None],
        on_error: Callable[[Exception], None],
    ) -> Future:
        """Run ``call(client)`` off the UI thread; *on_done* or *on_error* runs on the UI thread."""

        def run() -> None:
            try:
                result = call(self.client)
            except Exception as error:  # every failure is reported to the screen that asked
                self._post(lambda error=error: on_error(error))
            else:
                self._post(lambda result=result: on_done(result))

        return self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


def telemetry_url(http_url: str) -> str:
    """The WebSocket URL of the telemetry stream of a service URL."""
    scheme, _, rest = http_url.rstrip("/").partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/telemetry"


class TelemetryStream:
    """Reads the telemetry WebSocket on a daemon thread, reconnecting until stopped.

    Each decoded message goes to *on_sample*, and every change of connection to *on_link*
    (True when connected), both on the UI thread through *post*. The handshake carries the
    access token when one is configured, as every REST request does.
    """

    def __init__(
        self,
        url: str,
        on_sample: Callable[[dict[str, Any]], None],
        on_link: Callable[[bool], None],
        post: Post = kivy_post,
        retry_s: float = 1.0,
        access_token: str | None = None,
    ) -> None:
        self.url = telemetry_url(url)
        self._headers = {"Authorization": f"Bearer {access_token}"} if access_token else None
        self._on_sample = on_sample
        self._on_link = on_link
        self._post = post
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._socket: Any = None
        self._thread = threading.Thread(target=self._run, name="kiosk-telemetry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        socket = self._socket
        if socket is not None:
            socket.close()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        from websockets.sync.client import connect

        while not self._stop.is_set():
            try:
                with connect(
                    self.url, open_timeout=2, close_timeout=1, additional_headers=self._headers
                ) as socket:
                    self._socket = socket
                    self._post(lambda: self._on_link(True))
                    for message in socket:
                        if self._stop.is_set():
                            break
                        sample = json.loads(message)
                        self._post(lambda sample=sample: self._on_sample(sample))
            except Exception as error:  # refused, dropped, malformed: report and retry
                log.debug("telemetry: %s", error)
            finally:
                self._socket = None
            if not self._stop.is_set():
                self._post(lambda: self._on_link(False))
                self._stop.wait(self._retry_s)
