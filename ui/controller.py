"""The kiosk's link to the rig service: status polling, telemetry and commands, never blocking."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any

from kivy.clock import Clock
from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, NumericProperty, ObjectProperty, StringProperty

from rig.client.http import RigClient, ServiceRejected, ServiceUnreachable, describe_detail
from ui.worker import ApiWorker, Post, TelemetryStream, kivy_post

Done = Callable[[Any], None]
Failed = Callable[[str], None]


def error_text(error: Exception) -> str:
    """What a screen shows for a failed request: what kind of refusal, then the service's own
    reason (a wrong PIN, a missing session and a role that may not do this read differently)."""
    if isinstance(error, ServiceRejected):
        reason = describe_detail(error.detail)
        fields = {p.get("field") for p in _problems(error.detail)}
        if error.status_code == 401 and fields & {"pin", "old_pin"}:
            return f"Wrong PIN.\n{reason}"
        if error.status_code == 401:
            return f"Log in first.\n{reason}"
        if error.status_code == 403:
            return f"Not allowed for this role.\n{reason}"
        if error.status_code == 429:
            return f"Locked after too many wrong PINs.\n{reason}"
        return reason
    if isinstance(error, ServiceUnreachable):
        return "The rig service does not answer."
    return f"{error.__class__.__name__}: {error}"


def _problems(detail: Any) -> list[dict[str, Any]]:
    items = detail if isinstance(detail, list) else [detail]
    return [item for item in items if isinstance(item, dict)]


class Controller(EventDispatcher):
    """Holds the latest status and telemetry; runs every API call on worker threads.

    ``reachable`` turns False when a status poll finds nothing at the URL and True again at the
    first answer; screens bind to ``status`` and to the ``on_sample`` event.
    """

    status = ObjectProperty({}, rebind=True)
    reachable = BooleanProperty(False)
    ever_reached = BooleanProperty(False)
    telemetry_linked = BooleanProperty(False)
    role = StringProperty("")
    silence_remaining_s = NumericProperty(0)
    last_error = StringProperty("")

    __events__ = ("on_sample",)

    def __init__(
        self, url: str, poll_s: float = 1.0, post: Post = kivy_post, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.poll_s = poll_s
        self.worker = ApiWorker(RigClient(url, timeout_s=3.0), post)
        self.telemetry = TelemetryStream(
            url, self._sample, self._link, post, access_token=self.worker.client.access_token
        )
        self._polling = False
        self._events: list[Any] = []

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.telemetry.start()
        self.refresh()
        self._poll_event = Clock.schedule_interval(lambda _dt: self.refresh(), self.poll_s)
        self._tick_event = Clock.schedule_interval(self._tick, 1.0)

    def stop(self) -> None:
        for name in ("_poll_event", "_tick_event"):
            event = getattr(self, name, None)
            if event is not None:
                event.cancel()
        self.telemetry.stop()
        self.worker.close()

    # -- status ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Ask for a fresh status unless a poll is already on its way."""
        if self._polling:
            return
        self._polling = True
        self.worker.submit(lambda c: c.get("/api/status"), self._got_status, self._status_failed)

    def _got_status(self, status: dict[str, Any]) -> None:
        self._polling = False
        self.status = status
        self.silence_remaining_s = float(status.get("silence_remaining_s") or 0)
        self.reachable = True
        self.ever_reached = True

    def _status_failed(self, error: Exception) -> None:
        self._polling = False
        if isinstance(error, ServiceUnreachable):
            self.reachable = False
        self.last_error = error_text(error)

    def _tick(self, _dt: float) -> None:
        if self.silence_remaining_s > 0:
            self.silence_remaining_s = max(0.0, self.silence_remaining_s - 1)

    def _sample(self, sample: dict[str, Any]) -> None:
        self.dispatch("on_sample", sample)

    def on_sample(self, sample: dict[str, Any]) -> None:
        """Default handler of a telemetry sample (screens bind their own)."""

    def _link(self, linked: bool) -> None:
        self.telemetry_linked = linked

    # -- commands --------------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        on_done: Done | None = None,
        on_error: Failed | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """One API request off the UI thread; a successful POST refreshes the status."""

        def done(result: Any) -> None:
            if method != "GET":
                self.refresh()
            if on_done is not None:
                with suppress(ReferenceError):  # the widget that asked is gone: drop the reply
                    on_done(result)

        def failed(error: Exception) -> None:
            if isinstance(error, ServiceUnreachable):
                self.reachable = False
            if on_error is not None:
                with suppress(ReferenceError):
                    on_error(error_text(error))

        self.worker.submit(
            lambda c: c.request(method, path, json=body, params=params), done, failed
        )

    def get(self, path: str, on_done: Done, on_error: Failed | None = None, **params: Any) -> None:
        sent = {key: value for key, value in params.items() if value is not None}
        self.call("GET", path, None, on_done, on_error, params=sent or None)

    def post(
        self,
        path: str,
        body: Any = None,
        on_done: Done | None = None,
        on_error: Failed | None = None,
    ) -> None:
        self.call("POST", path, body, on_done, on_error)

    def login(self, role: str, pin: str, on_done: Done, on_error: Failed) -> None:
        """Log in with a role's PIN; later requests carry the session."""

        def done(token: str) -> None:
            self.role = role
            on_done(token)

        self.worker.submit(
            lambda c: c.login(role, pin), done, lambda error: on_error(error_text(error))
        )

    def logout(self) -> None:
        self.worker.client.session_token = None
        self.role = ""
