"""The Python client: chainrule's REST API over HTTP (httpx), for scripts, notebooks and the CLI.

    from chainrule.client import Client
    with Client("http://127.0.0.1:8000", key) as cr:       # or Client(): env / `chainrule login`
        ds = cr.upload_dataset("blobs.csv", name="blobs")
        job = cr.submit({"model": {...}, "loss": "cross_entropy"}, dataset_id=ds["id"], tags=["demo"])
        for event in cr.watch(job["id"]):                 # progress, epoch, status ... until final
            print(event.kind, event.data)
        cr.download_weights(job["id"], "weights.safetensors")

It speaks only HTTP, so it works against any server; it imports nothing of the service. Every
error status raises ApiError carrying the API's message (what is wrong and where).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
from httpx_sse import SSEError, connect_sse

from .client_extras import SWEEP_FINAL, AnalysesCalls, SweepsCalls, WebhooksCalls
from .client_http import FINAL, ApiError, Event, HttpClient, WaitTimeout, check, error_message

__all__ = ["ApiError", "Client", "Event", "WaitTimeout", "check", "error_message", "FINAL", "SWEEP_FINAL",
           "PLOT_KINDS"]

PLOT_KINDS = ("loss", "metric", "grad_norms", "update_ratios", "landscape", "spectral_density")   # GET /v1/jobs/{id}/plots/{kind}.png
PAGE = 100                      # the most items a list call returns
RECONNECT_DELAY_S = 1.0


class Client(AnalysesCalls, SweepsCalls, WebhooksCalls, HttpClient):
    """Every call of the API; the plumbing is client_http.HttpClient's, the analyses', sweeps' and
    webhooks' calls are client_extras'."""

    # ------------------------------------------------------------------ datasets
    def upload_dataset(self, path: str | Path, *, name: str | None = None, target: str | None = None,
                       task: str | None = None, tokenizer: str | None = None, text_column: str | None = None,
                       max_length: int | None = None) -> dict[str, Any]:
        """Upload a CSV, NPZ or UTF-8 text (.txt: a language model's token stream); task None lets the server
        infer it (the response says why). tokenizer: byte (default) or char, for text; text_column: a CSV's
        column of texts (sequence classification), padded or cut to max_length tokens."""
        path = Path(path)
        fields = {k: v for k, v in {"name": name, "target": target, "task": task, "tokenizer": tokenizer,
                                    "text_column": text_column, "max_length": max_length}.items() if v}
        with open(path, "rb") as f:
            return self._json("POST", "/v1/datasets", files={"file": (path.name, f)}, data=fields)

    def list_datasets(self, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        return self._json("GET", "/v1/datasets", params={"limit": limit, "offset": offset})

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{dataset_id}")

    # ------------------------------------------------------------------ jobs
    def submit(self, job: dict[str, Any], *, dataset_id: str | None = None, name: str | None = None,
               tags: list[str] | None = None) -> dict[str, Any]:
        """Submit a job body (model, loss, optimizer, ...); the keywords override its fields."""
        body = dict(job)
        body.update({k: v for k, v in {"dataset_id": dataset_id, "name": name, "tags": tags}.items() if v})
        return self._json("POST", "/v1/jobs", json=body)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list(self, *, status: str | None = None, name: str | None = None, tag: str | list[str] | None = None,
             sweep: str | None = None, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """A page of jobs, newest first: {"items", "total", "limit", "offset"}; tags must all match;
        `sweep`: only that sweep's trials."""
        params = {"status": status, "name": name, "tag": [tag] if isinstance(tag, str) else tag,
                  "sweep": sweep, "limit": limit, "offset": offset}
        return self._json("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        """The finished epochs' metrics, in order."""
        return self._json("GET", f"/v1/jobs/{job_id}/metrics")["epochs"]

    def split(self, job_id: str) -> dict[str, Any]:
        """The rows the job trained on and held out for validation (`train_rows`, `validation_rows`,
        numbered from 0 in upload order), or a text's token ranges; docs/datasets.md#the-split."""
        return self._json("GET", f"/v1/jobs/{job_id}/split")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def delete(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{job_id}")

    def download_weights(self, job_id: str, path: str | Path) -> Path:
        """The trained weights (.safetensors) to `path`, written whole or not at all."""
        return self.download(f"/v1/jobs/{job_id}/weights", path)

    def export_onnx(self, job_id: str, path: str | Path) -> Path:
        """The trained network as ONNX (input `input`, output `output`, a dynamic batch) to `path`."""
        return self.download(f"/v1/jobs/{job_id}/export.onnx", path)

    def download_script(self, job_id: str, path: str | Path) -> Path:
        """The job as a plain PyTorch training script (torch, safetensors) to `path`."""
        return self.download(f"/v1/jobs/{job_id}/script.py", path)

    def download_dataset(self, dataset_id: str, path: str | Path) -> Path:
        """The dataset's tensor file as jobs train on it (.safetensors: X and y) to `path`."""
        return self.download(f"/v1/datasets/{dataset_id}/file", path)

    def plot(self, job_id: str, kind: str = "loss", *, width: int | None = None,
             height: int | None = None) -> bytes:
        """A PNG of the job: kind loss | metric | grad_norms | update_ratios | landscape; width and
        height in pixels (the server's default when None). In a notebook:
        `IPython.display.Image(cr.plot(job_id, "grad_norms"))`."""
        params = {k: v for k, v in {"width": width, "height": height}.items() if v is not None}
        return self.request("GET", f"/v1/jobs/{job_id}/plots/{kind}.png", params=params).content

    def generate(self, job_id: str, prompt: str, *, max_new_tokens: int = 100, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0) -> dict[str, Any]:
        """Text from a trained language model: {text, generated, ids, prompt_tokens}; temperature 0 is greedy."""
        body = {"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
                **({"top_k": top_k} if top_k is not None else {})}
        return self._json("POST", f"/v1/jobs/{job_id}/generate", json=body)

    def predict(self, job_id: str, inputs: list[Any], columns: list[str] | None = None) -> dict[str, Any]:
        """Outputs for rows shaped like the dataset's samples (+ probabilities and classes); columns: the
        rows' column names (a CSV header), matched to the dataset's feature columns by name."""
        body = {"inputs": inputs} if columns is None else {"inputs": inputs, "columns": columns}
        return self._json("POST", f"/v1/jobs/{job_id}/predict", json=body)

    def findings(self, job_id: str, *, severity: str | None = None, code: str | None = None,
                 after_id: int = 0) -> list[dict[str, Any]]:
        """What the diagnostics rules found, in the order found (after_id: only later ones)."""
        params, found = {k: v for k, v in {"severity": severity, "code": code}.items() if v}, []
        while True:
            page = self._json("GET", f"/v1/jobs/{job_id}/findings",
                              params={**params, "after_id": after_id, "limit": PAGE})["items"]
            found += page
            if len(page) < PAGE:
                return found
            after_id = page[-1]["id"]

    # ------------------------------------------------------------------ following a job
    def watch(self, job_id: str, *, last_event_id: str | None = None, read_timeout: float | None = None,
              reconnect_for: float = 60.0) -> Iterator[Event]:
        """The job's events until its final status. A dropped connection is resumed from the last
        event seen (Last-Event-ID), so nothing is missed or repeated; after `reconnect_for` seconds
        without getting through, ApiError. `read_timeout`: raise httpx.ReadTimeout when nothing (not
        even a keep-alive) arrives for that long."""
        failing_since: float | None = None
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            timeout = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
            try:
                with connect_sse(self.http, "GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                 timeout=timeout) as source:
                    check(source.response)
                    failing_since = None
                    for sse in source.iter_sse():
                        event = Event(sse.event, json.loads(sse.data) if sse.data else {}, sse.id)
                        last_event_id = sse.id or last_event_id
                        yield event
                        if event.kind == "status" and event.data.get("status") in FINAL:
                            return
            except (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError, SSEError) as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > reconnect_for:
                    raise ApiError(0, f"lost the event stream of job {job_id} at {self.url} and could not "
                                      f"resume it for {reconnect_for:g} s ({exc})") from None
            time.sleep(RECONNECT_DELAY_S)

    def wait(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job is final and return it; WaitTimeout after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_event_id = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(self.get(job_id), timeout)
            try:
                for event in self.watch(job_id, last_event_id=last_event_id, read_timeout=remaining):
                    last_event_id = event.id
                    if deadline is not None and time.monotonic() > deadline:
                        break
                else:
                    return self.get(job_id)
            except httpx.ReadTimeout:
                pass

