"""The client's calls beyond datasets and jobs: the analyses (gradient check, loss landscape), sweeps and
webhooks, as mixins of chainrule.client.Client over HttpClient's request / _json."""
from __future__ import annotations

import time
from typing import Any

from .client_http import FINAL, HttpClient, WaitTimeout

SWEEP_FINAL = FINAL


class AnalysesCalls(HttpClient):
    def gradcheck(self, model: dict[str, Any], loss: Any, *, input_shape: list[int] | None = None,
                  dataset_id: str | None = None, **options: Any) -> dict[str, Any]:
        """The engine's backward on this network against finite differences (batch_size, seed, ...)."""
        body = {"model": model, "loss": loss, "input_shape": input_shape, "dataset_id": dataset_id, **options}
        return self._json("POST", "/v1/gradcheck", json={k: v for k, v in body.items() if v is not None})

    def request_landscape(self, job_id: str, **options: Any) -> dict[str, Any]:
        """Queue a succeeded job's loss landscape (points, grid, samples, iterations, ...)."""
        return self._json("POST", f"/v1/jobs/{job_id}/landscape", json=options)

    def landscape(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}/landscape")

    def cancel_landscape(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/landscape/cancel")


class SweepsCalls(HttpClient):
    def submit_sweep(self, sweep: dict[str, Any], *, dataset_id: str | None = None,
                     name: str | None = None) -> dict[str, Any]:
        """Submit a sweep body (job, parameters, method, metric, ...); the keywords override its fields.
        Every trial is a job of this key (list them with list(sweep=id))."""
        body = dict(sweep)
        body.update({k: v for k, v in {"dataset_id": dataset_id, "name": name}.items() if v})
        return self._json("POST", "/v1/sweeps", json=body)

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Status, counts, every trial (parameters, status, epochs, best value) and the best trial."""
        return self._json("GET", f"/v1/sweeps/{sweep_id}")

    def list_sweeps(self, *, status: str | None = None, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        params = {"status": status, "limit": limit, "offset": offset}
        return self._json("GET", "/v1/sweeps", params={k: v for k, v in params.items() if v is not None})

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/sweeps/{sweep_id}/cancel")

    def delete_sweep(self, sweep_id: str) -> None:
        self.request("DELETE", f"/v1/sweeps/{sweep_id}")

    def wait_sweep(self, sweep_id: str, *, timeout: float | None = None, poll_s: float = 1.0) -> dict[str, Any]:
        """Block until the sweep is final and return it; WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (sweep := self.get_sweep(sweep_id))["status"] not in SWEEP_FINAL:
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(sweep, timeout)
            time.sleep(poll_s)
        return sweep

class WebhooksCalls(HttpClient):
    def create_webhook(self, url: str, events: list[str], *, secret: str | None = None) -> dict[str, Any]:
        """Subscribe `url` to events (job.succeeded, job.failed, job.cancelled, sweep.finished,
        finding.error); the answer holds the signing secret, shown only here (docs/webhooks.md)."""
        body = {"url": url, "events": events, **({"secret": secret} if secret else {})}
        return self._json("POST", "/v1/webhooks", json=body)

    def list_webhooks(self) -> dict[str, Any]:
        return self._json("GET", "/v1/webhooks")

    def delete_webhook(self, webhook_id: str) -> None:
        self.request("DELETE", f"/v1/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, *, status: str | None = None, limit: int = 20,
                           offset: int = 0) -> dict[str, Any]:
        """The webhook's deliveries, newest first, each with its body and every attempt."""
        params = {"status": status, "limit": limit, "offset": offset}
        return self._json("GET", f"/v1/webhooks/{webhook_id}/deliveries",
                          params={k: v for k, v in params.items() if v is not None})

