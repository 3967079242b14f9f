"""The client's plumbing: one httpx connection to chainrule's REST API with the key as a Bearer token,
error statuses as ApiError carrying the API's message, and streamed downloads written whole or not at all.
chainrule.client builds the API's calls on it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .client_config import resolve

FINAL = ("succeeded", "failed", "cancelled")     # a job's (and a sweep's) last statuses


class ApiError(Exception):
    """An error response: `status`, the API's `message`, and its `detail` as sent."""

    def __init__(self, status: int, message: str, detail: Any = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.detail = status, message, detail


class WaitTimeout(TimeoutError):
    """wait() or wait_sweep() ran out of time; `job` is the job (or sweep) as last read."""

    def __init__(self, job: dict[str, Any], timeout: float):
        super().__init__(f"{job['id']} is still {job['status']} after {timeout:g} s")
        self.job = job


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: kind progress | epoch | status | finding; `id` resumes after it."""
    kind: str
    data: dict[str, Any]
    id: str


def error_message(detail: Any) -> str:
    """The API's error detail as one line: a sentence, or a 422's list of `msg`s."""
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail)
    return str(detail)



def check(response: httpx.Response) -> None:
    """Raise ApiError for an error status, with the API's message."""
    if response.status_code < 400:
        return
    response.read()
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text[:500] or response.reason_phrase
    raise ApiError(response.status_code, error_message(detail), detail)


class HttpClient:
    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 60.0):
        """url and key: as given, else CHAINRULE_URL / CHAINRULE_API_KEY, else `chainrule login`'s
        config file; the url defaults to http://127.0.0.1:8000."""
        self.url, key = resolve(url, key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; an error status raises ApiError with the API's message."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach chainrule at {self.url}: {exc} (is the server running? "
                              "set --url or CHAINRULE_URL)") from None
        check(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()


    def download(self, url_path: str, path: str | Path) -> Path:
        """GET url_path streamed to `path`, written whole or not at all."""
        path = Path(path)
        partial = path.with_name(path.name + ".part")
        try:
            with self.http.stream("GET", url_path) as response:
                check(response)
                with open(partial, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path
