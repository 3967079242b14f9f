"""GET /v1/jobs/{id}/events in process: the rows a worker writes, streamed in order as server-sent
events; resume by Last-Event-ID; bounded per key. A real worker's stream: tests/service/test_client_e2e.py."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from conftest import finish, iris_like
from core.tables import Job, JobMetric, utcnow

pytestmark = pytest.mark.timeout(60)


def read_events(client, job_id: str, headers: dict, last_id: str | None = None) -> list[dict]:
    """The whole stream, parsed: [{"id", "event", "data"}] (comments skipped)."""
    headers = {**headers, **({"Last-Event-ID": last_id} if last_id else {})}
    out, current = [], {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "event" in current:
                    out.append(current)
                current = {}
            elif not line.startswith((":", "retry:")):   # comments (keep-alives), the reconnect hint
                field, _, value = line.partition(":")
                current[field] = json.loads(value.strip()) if field == "data" else value.strip()
    return out


def record_epochs(svc, job_id: str, n: int) -> None:
    """What a running worker writes per epoch: a job_metrics row and the job's progress."""
    with svc.session() as s:
        for epoch in range(1, n + 1):
            s.add(JobMetric(job_id=job_id, epoch=epoch, train_loss=1.0 / epoch, val_loss=1.5 / epoch,
                            metrics={"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.5 / epoch,
                                     "val_accuracy": 0.5 + epoch / 10}))
        s.execute(update(Job).where(Job.id == job_id).values(
            status="running", started_at=utcnow(), epoch=n, step=3 * n, total_steps=3 * n, fraction=1.0))
        s.commit()


def test_a_finished_job_streams_its_epochs_in_order_then_its_final_status(svc, iris):
    job = svc.submit(iris["id"], epochs=3).json()
    record_epochs(svc, job["id"], 3)
    finish(svc, job, iris["input_shape"])
    events = read_events(svc.client, job["id"], svc.a)
    kinds = [e["event"] for e in events]
    assert kinds == ["epoch", "epoch", "epoch", "progress", "status"]
    assert [e["data"]["epoch"] for e in events[:3]] == [1, 2, 3]
    assert events[0]["data"]["val_accuracy"] == pytest.approx(0.6)
    assert events[3]["data"] == {"epoch": 3, "epochs": 3, "step": 9, "total_steps": 9, "fraction": 1.0}
    assert events[-1]["data"] == {"status": "succeeded", "error": None}
    assert len({e["id"] for e in events}) == len(events)


def test_last_event_id_resumes_with_only_what_came_after(svc, iris):
    job = svc.submit(iris["id"], epochs=3).json()
    record_epochs(svc, job["id"], 3)
    finish(svc, job, iris["input_shape"])
    full = read_events(svc.client, job["id"], svc.a)
    for cut in range(len(full)):
        rest = read_events(svc.client, job["id"], svc.a, last_id=full[cut]["id"])
        assert rest == full[cut + 1:], cut
    # an id that is not ours restarts from the beginning rather than failing
    assert read_events(svc.client, job["id"], svc.a, last_id="garbage") == full


def test_a_queued_job_says_queued_first(svc, iris):
    job = svc.submit(iris["id"]).json()
    svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a)
    events = read_events(svc.client, job["id"], svc.a)
    assert [e["event"] for e in events] == ["progress", "status"]
    assert events[-1]["data"]["status"] == "cancelled"


def test_another_keys_job_is_404_and_streams_are_bounded_per_key(service_factory):
    svc = service_factory(max_event_streams_per_key=1, events_poll_interval_s=0.05)
    dataset = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(dataset["id"]).json()
    assert svc.client.get(f"/v1/jobs/{job['id']}/events", headers=svc.b).status_code == 404
    with svc.client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=svc.a) as first:
        assert first.status_code == 200
        second = svc.client.get(f"/v1/jobs/{job['id']}/events", headers=svc.a)
        assert second.status_code == 429 and "max_event_streams_per_key" in second.json()["detail"]
        svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a)
        assert any("cancelled" in line for line in first.iter_lines())
    # the slot is given back when a stream ends
    assert [e["event"] for e in read_events(svc.client, job["id"], svc.a)][-1] == "status"
