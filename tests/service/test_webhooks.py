"""Webhooks through the API, in process: subscriptions per key, the outbox row written with the
job's final transition, the signature a receiver checks, retries after a 500 with backoff, and the
SSRF refusals. The worker's task body (core.webhooks.delivery.deliver) sends to a real local HTTP
server; the real worker process and its SIGKILL are test_webhooks_e2e.py's."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.tables import WebhookDelivery, as_utc
from core.webhooks import delivery, signing
from conftest import iris_like
from webhook_receiver import Receiver

SECRET = "s3cret-for-the-tests-0123456789"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def documented_verify():
    """The receiver's check as docs/webhooks.md gives it to users, run as written."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    [code] = [block for block in blocks if "def verify" in block]
    scope: dict = {}
    exec(compile(code, str(DOCS), "exec"), scope)
    return scope["verify"]


def subscribe(svc, url: str, events=("job.cancelled",), headers=None, **body):
    r = svc.client.post("/v1/webhooks", headers=headers or svc.a,
                        json={"url": url, "events": list(events), "secret": SECRET, **body})
    assert r.status_code == 201, r.text
    return r.json()


def cancelled_job(svc) -> str:
    """A job cancelled while queued (no worker here): its job.cancelled row is in the outbox."""
    dataset = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(dataset["id"]).json()
    assert svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a).status_code == 200
    return job["id"]


def only_delivery(svc, hook_id: str) -> dict:
    r = svc.client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=svc.a)
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 1, r.json()
    return r.json()["items"][0]


def test_a_key_manages_its_own_webhooks_and_bad_input_names_the_field(service_factory):
    svc = service_factory(webhook_allow_private_targets=True, max_webhooks_per_key=2)
    made = subscribe(svc, "http://127.0.0.1:9/hook", ["job.succeeded", "job.failed", "job.succeeded"])
    assert made["events"] == ["job.succeeded", "job.failed"] and made["secret"] == SECRET
    generated = svc.client.post("/v1/webhooks", headers=svc.a,
                                json={"url": "http://127.0.0.1:9/other", "events": ["sweep.finished"]}).json()
    assert generated["secret"].startswith("whsec_") and len(generated["secret"]) > 40
    listed = svc.client.get("/v1/webhooks", headers=svc.a).json()
    assert [h["id"] for h in listed["items"]] == [made["id"], generated["id"]]
    assert all("secret" not in h for h in listed["items"])          # shown once, at creation
    third = svc.client.post("/v1/webhooks", headers=svc.a,
                            json={"url": "http://127.0.0.1:9/x", "events": ["job.failed"]})
    assert third.status_code == 409 and "limit is 2" in third.json()["detail"]

    for path in (f"/v1/webhooks/{made['id']}", f"/v1/webhooks/{made['id']}/deliveries"):
        assert svc.client.get(path, headers=svc.b).status_code == 404       # another key's
    assert svc.client.delete(f"/v1/webhooks/{made['id']}", headers=svc.b).status_code == 404
    assert svc.client.get("/v1/webhooks", headers=svc.b).json()["total"] == 0

    bad = {"events": (["job.finished"], "events"), "secret": ("short", "secret"), "url": ("ftp://x/", "url")}
    for field, (value, loc) in bad.items():
        body = {"url": "http://127.0.0.1:9/hook", "events": ["job.failed"], field: value}
        r = svc.client.post("/v1/webhooks", headers=svc.a, json=body)
        assert r.status_code == 422, r.text
        assert any(loc in map(str, item["loc"]) for item in r.json()["detail"]), r.json()
    assert svc.client.delete(f"/v1/webhooks/{made['id']}", headers=svc.a).status_code == 204
    assert svc.client.get(f"/v1/webhooks/{made['id']}", headers=svc.a).status_code == 404


@pytest.mark.parametrize("url, kind", [("http://127.0.0.1:8080/hook", "loopback"),
                                       ("http://localhost/hook", "loopback"),
                                       ("http://169.254.169.254/latest/meta-data", "link-local"),
                                       ("http://10.1.2.3/hook", "private"),
                                       ("http://[::ffff:192.168.0.1]/hook", "private")])
def test_private_targets_are_refused_unless_allowed(svc, url, kind):
    r = svc.client.post("/v1/webhooks", headers=svc.a, json={"url": url, "events": ["job.failed"]})
    assert r.status_code == 422, r.text
    problem = r.json()["detail"][0]
    assert problem["loc"] == ["body", "url"] and kind in problem["msg"], problem


def test_a_target_refused_at_send_time_fails_without_a_request(service_factory):
    """Allowed when made, refused when sent (the setting changed, or the name now resolves inward)."""
    svc = service_factory(webhook_allow_private_targets=True)
    with Receiver() as receiver:
        hook = subscribe(svc, receiver.url)
        cancelled_job(svc)
        strict = svc.settings.model_copy(update={"webhook_allow_private_targets": False})
        assert delivery.deliver(strict, only_delivery(svc, hook["id"])["id"]) == "failed"
    assert receiver.requests == []
    item = only_delivery(svc, hook["id"])
    assert item["status"] == "failed" and "loopback" in item["attempt_log"][0]["error"]


def test_the_outbox_row_is_written_with_the_transition_and_the_receiver_verifies_its_signature(service_factory):
    svc = service_factory(webhook_allow_private_targets=True)
    with Receiver() as receiver:
        hook = subscribe(svc, receiver.url, ["job.cancelled", "job.succeeded"])
        subscribe(svc, receiver.url, ["job.cancelled"], headers=svc.b)      # bob's: bob's jobs only
        job_id = cancelled_job(svc)
        pending = only_delivery(svc, hook["id"])      # committed with the cancel, before any worker ran
        assert pending["status"] == "pending" and pending["attempts"] == 0
        assert pending["body"]["type"] == "job.cancelled" and pending["body"]["data"]["job"]["id"] == job_id
        assert delivery.deliver(svc.settings, pending["id"]) == "delivered"
    [request] = receiver.requests
    headers = {k.lower(): v for k, v in request.headers.items()}
    # the receiver's check, written out as docs/webhooks.md tells a user to
    fields = dict(item.split("=", 1) for item in headers["chainrule-signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{fields['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert abs(int(fields["t"]) - time.time()) < 60
    assert signing.verify(SECRET, headers["chainrule-signature"], request.body)
    verify = documented_verify()
    assert verify(SECRET, headers["chainrule-signature"], request.body)
    assert not verify(SECRET, headers["chainrule-signature"], request.body.replace(b"cancelled", b"succeeded"))
    stale = f"t={int(fields['t']) - 600},v1={signing.signature(SECRET, int(fields['t']) - 600, request.body)}"
    assert signing.verify(SECRET, stale, request.body, tolerance_s=3600) and not verify(SECRET, stale, request.body)
    assert not signing.verify("another-secret-0123456789", headers["chainrule-signature"], request.body)
    assert not signing.verify(SECRET, headers["chainrule-signature"], request.body + b" ")
    body = json.loads(request.body)
    assert headers["chainrule-delivery"] == body["id"] == pending["id"]
    assert headers["chainrule-event"] == "job.cancelled" and body["data"]["job"]["status"] == "cancelled"
    done = only_delivery(svc, hook["id"])
    assert done["status"] == "delivered" and [a["status_code"] for a in done["attempt_log"]] == [200]
    assert delivery.deliver(svc.settings, pending["id"]) == "skipped"      # a duplicate message: nothing sent


def test_a_receiver_answering_500_gets_retries_with_backoff_until_it_accepts(service_factory):
    svc = service_factory(webhook_allow_private_targets=True, webhook_retry_base_s=0.2, webhook_max_attempts=5)
    with Receiver(answers=[500, 500]) as receiver:
        hook = subscribe(svc, receiver.url)
        cancelled_job(svc)
        delivery_id = only_delivery(svc, hook["id"])["id"]
        outcomes = [delivery.deliver(svc.settings, delivery_id)]
        assert delivery.deliver(svc.settings, delivery_id) == "skipped"      # not due before its backoff
        for _ in range(2):
            deadline = time.monotonic() + 5
            while delivery_id not in delivery.dispatch_due(svc.settings):   # the reconciler's resend, once due
                assert time.monotonic() < deadline, "the retry never came due"
                time.sleep(0.02)
            outcomes.append(delivery.deliver(svc.settings, delivery_id))
    assert outcomes == ["pending", "pending", "delivered"]
    assert len(receiver.requests) == 3
    assert {r.headers["Chainrule-Delivery"] for r in receiver.requests} == {delivery_id}   # one id: idempotent
    assert len({r.body for r in receiver.requests}) == 1
    log = only_delivery(svc, hook["id"])["attempt_log"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in log] == \
        [(1, 500, "HTTP 500"), (2, 500, "HTTP 500"), (3, 200, None)]
    with svc.session() as s:
        row = s.scalars(select(WebhookDelivery)).one()
        assert row.status == "delivered" and row.attempts == 3


def test_a_delivery_stops_after_its_attempts(service_factory):
    svc = service_factory(webhook_allow_private_targets=True, webhook_retry_base_s=0.05, webhook_max_attempts=2)
    with Receiver(answers=[503, 503, 503]) as receiver:
        hook = subscribe(svc, receiver.url)
        cancelled_job(svc)
        delivery_id = only_delivery(svc, hook["id"])["id"]
        assert delivery.deliver(svc.settings, delivery_id) == "pending"
        first = only_delivery(svc, hook["id"])
        waited = as_utc_iso(first["next_attempt_at"]) - as_utc_iso(first["attempt_log"][0]["at"])
        assert abs(waited - timedelta(seconds=0.05)) < timedelta(milliseconds=5)
        time.sleep(0.1)
        assert delivery.deliver(svc.settings, delivery_id) == "failed"
        assert delivery.dispatch_due(svc.settings) == []           # never sent again
    assert len(receiver.requests) == 2
    item = only_delivery(svc, hook["id"])
    assert item["status"] == "failed" and item["next_attempt_at"] is None and item["attempts"] == 2


def as_utc_iso(text: str):
    from datetime import datetime
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def events_of(svc, hook_id: str) -> list[tuple[str, str]]:
    items = svc.client.get(f"/v1/webhooks/{hook_id}/deliveries?limit=100", headers=svc.a).json()["items"]
    return sorted((d["body"]["type"], d["status"]) for d in items)


def test_every_producer_writes_its_event_a_subscriber_asked_for(service_factory):
    """A sweep's cancel (sweep.finished, job.cancelled per queued trial), the reconciler's no_worker
    failure (job.failed, handed to a worker in the same pass) and an error finding (finding.error);
    an event not subscribed to writes nothing."""
    from core import findings, reconciler
    from core.tables import Job

    svc = service_factory(webhook_allow_private_targets=True, worker_wait_s=0.05)
    hook = subscribe(svc, "http://127.0.0.1:9/hook", ["sweep.finished", "job.cancelled", "job.failed",
                                                       "finding.error"])
    only_sweeps = subscribe(svc, "http://127.0.0.1:9/sweeps", ["sweep.finished"])
    dataset = svc.dataset(iris_like(), "iris.csv")
    sweep = svc.client.post("/v1/sweeps", headers=svc.a, json={
        "name": "lr", "dataset_id": dataset["id"], "method": "grid", "max_concurrent": 2,
        "job": {"model": {"layers": [{"type": "linear", "out_features": 3}]}, "loss": "cross_entropy",
                "epochs": 2, "batch_size": 4, "device": "cpu"},
        "parameters": {"optimizer.lr": {"choice": [0.01, 0.1, 1.0]}}}).json()
    assert svc.client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=svc.a).status_code == 200
    assert events_of(svc, hook["id"]) == [("job.cancelled", "pending")] * 2 + [("sweep.finished", "pending")]
    assert events_of(svc, only_sweeps["id"]) == [("sweep.finished", "pending")]

    job = svc.submit(dataset["id"]).json()          # no live worker: it waits, then fails no_worker
    time.sleep(0.1)
    passed = reconciler.reconcile(svc.settings)
    assert job["id"] in passed.failed
    failed = [d for d in svc.client.get(f"/v1/webhooks/{hook['id']}/deliveries?status=pending",
                                        headers=svc.a).json()["items"] if d["event"] == "job.failed"]
    assert [d["body"]["data"]["job"]["error_code"] for d in failed] == ["no_worker"]
    assert failed[0]["id"] in passed.webhooks_sent

    finding = {"epoch": 1, "step": 3, "code": "nan_loss", "severity": "error", "layer": None,
               "message": "the loss is NaN", "hint": "lower lr"}
    with svc.session() as s:
        assert findings.record(s, job["id"], [finding, {**finding, "severity": "warning"}], (Job.id == job["id"],))
        s.commit()
    [error] = [d for d in svc.client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=svc.a).json()["items"]
               if d["event"] == "finding.error"]
    assert error["body"]["data"] == {"job": {"id": job["id"], "url": f"/v1/jobs/{job['id']}"}, "finding": finding}


@pytest.mark.timeout(60)   # without the deadline the attempt never ends
def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(service_factory):
    """httpx bounds each read, not the answer: a byte every 0.2 s would hold a worker for good. One
    attempt ends at webhook_timeout_s, as a failed attempt to retry."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"X")                # a header line that never ends
                except OSError:
                    return
    threading.Thread(target=trickle, daemon=True).start()
    svc = service_factory(webhook_allow_private_targets=True, webhook_timeout_s=1)
    hook = subscribe(svc, f"http://127.0.0.1:{server.getsockname()[1]}/hook")
    cancelled_job(svc)
    try:
        assert delivery.deliver(svc.settings, only_delivery(svc, hook["id"])["id"]) == "pending"
    finally:
        stop.set()
        server.close()
    [failed] = only_delivery(svc, hook["id"])["attempt_log"]
    # cut by the deadline (the receiver never stops on its own: without it this test hangs)
    assert failed["status_code"] is None and "within webhook_timeout_s=1 s" in failed["error"], failed


def test_the_cli_offers_exactly_the_servers_events_and_delivery_states():
    """chainrule.commands.webhooks speaks only HTTP (tests/test_layering.py), so it spells the events
    and states out again; they must stay the server's."""
    from typing import get_args

    from api.webhook_schemas import DeliveryPublic
    from chainrule.commands import webhooks as cli
    from core.webhooks import EVENTS

    assert [e.value for e in cli.Event] == list(EVENTS)
    assert [s.value for s in cli.Status] == list(get_args(DeliveryPublic.model_fields["status"].annotation))
