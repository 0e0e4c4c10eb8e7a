"""A small client of the rig service's HTTP API, used by the command line and the kiosk."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8470"
URL_ENV = "ITBRIG_URL"
TOKEN_ENV = "ITBRIG_TOKEN"


class ServiceUnreachable(RuntimeError):
    """Nothing answers at the service URL (not running, wrong port, network down)."""


class ServiceRejected(RuntimeError):
    """The service refused a request; ``status_code`` and ``detail`` say why."""

    def __init__(self, status_code: int, detail: Any) -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"HTTP {status_code}: {describe_detail(detail)}")


def describe_problem(problem: Any) -> str:
    """One problem of an error answer as ``field: message (allowed: ...)``."""
    if not isinstance(problem, dict):
        return str(problem)
    if "message" in problem:  # the service's one error shape: field, message, allowed
        field = problem.get("field")
        line = f"{field}: {problem['message']}" if field else str(problem["message"])
        allowed = problem.get("allowed")
        return f"{line} (allowed: {allowed})" if allowed else line
    location = ".".join(str(p) for p in problem.get("loc", []) if p != "body")  # older services
    message = str(problem.get("msg", problem))
    return f"{location}: {message}" if location else message


def describe_detail(detail: Any) -> str:
    """An error answer's ``detail`` as readable lines, one per problem."""
    if isinstance(detail, list):
        return "\n".join(describe_problem(problem) for problem in detail)
    if isinstance(detail, dict):
        return describe_problem(detail)
    return str(detail)


class RigClient:
    """Typed-error wrapper over httpx for the rig API (``/api/...``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        session_token: str | None = None,
        access_token: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.session_token = session_token
        self.access_token = access_token if access_token is not None else os.environ.get(TOKEN_ENV)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RigClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _headers(self) -> dict[str, str]:
        headers = {}
        if self.session_token:
            headers["X-Session"] = self.session_token
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        return headers

    def request(self, method: str, path: str, json: Any = None, params: Any = None) -> Any:
        response = self._send(method, path, json, params)
        return response.json() if response.content else None

    def download(self, path: str) -> bytes:
        """The body of a GET as bytes (a CSV file, a PDF report)."""
        return self._send("GET", path, None, None).content

    def _send(self, method: str, path: str, json: Any, params: Any) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, json=json, params=params, headers=self._headers()
            )
        except httpx.TransportError as error:
            raise ServiceUnreachable(
                f"the rig service at {self.url} does not answer ({error.__class__.__name__}); "
                "is `itbrig serve` running?"
            ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServiceRejected(response.status_code, detail)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, json: Any = None) -> Any:
        return self.request("POST", path, json=json)

    def login(self, role: str, pin: str) -> str:
        reply = self.post("/api/login", {"role": role, "pin": pin})
        self.session_token = reply["token"]
        return self.session_token
