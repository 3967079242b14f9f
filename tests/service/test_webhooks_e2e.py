"""Webhooks end to end with real `chainrule api` and `chainrule worker` processes: a job that
succeeds is announced to a local receiver, signed; the worker is SIGKILLed while its POST is in
flight, and the delivery still arrives (same id, same body) from another worker, after the receiver
first answers 500 once: the outbox row outlives the worker, its lease runs out, the reconciler sends
it again, and the retry backs off. On the embedded stack and on PostgreSQL + Redis."""
from __future__ import annotations

import json
import signal
import time

import pytest

from core.webhooks import signing
from e2e_support import CEILING_S, HANG_GUARD_S, blobs_csv, wait_for
from webhook_receiver import Receiver

pytestmark = pytest.mark.timeout(HANG_GUARD_S)
SECRET = "e2e-webhook-secret-0123456789"
WEBHOOK_SETTINGS = {"webhook_allow_private_targets": "true", "webhook_timeout_s": 1, "webhook_retry_base_s": 0.2}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_delivery_survives_a_worker_sigkill_and_a_500(stack_factory, backend):
    stack = stack_factory(backend, **WEBHOOK_SETTINGS).up()
    with Receiver(answers=[503, 500]) as receiver:   # the held request's answer is never read
        receiver.hold_next = True
        client = stack.client()       # the Python client a user would use
        hook_id = client.create_webhook(receiver.url, ["job.succeeded"], secret=SECRET)["id"]
        job = stack.submit(stack.upload_csv(blobs_csv(n=120))["id"], epochs=2)
        assert stack.wait_job(job["id"])["status"] == "succeeded"
        assert receiver.arrived.wait(CEILING_S), "the worker never sent the delivery"
        stack.procs["worker"].send_signal(signal.SIGKILL)          # mid-POST: the receiver holds it open
        killed_at = time.monotonic()
        stack.procs["worker"].wait()
        receiver.release()
        stack.start_worker("worker2")
        wait_for(lambda: len(receiver.requests) >= 3, CEILING_S, 0.1, "the delivery again, after the kill and the 500")
        print(f"\n[measured] {backend}: delivered {time.monotonic() - killed_at:.1f} s after the SIGKILL (lease "
              "6 s, a new worker started, one 500 and a 0.2 s backoff)")

        deliveries = client.webhook_deliveries(hook_id)
        assert client.webhook_deliveries(hook_id, status="pending")["total"] == 0
    assert deliveries["total"] == 1
    item = deliveries["items"][0]
    assert item["status"] == "delivered" and item["attempts"] == 3   # the killed worker's attempt counts
    assert [(a["attempt"], a["status_code"]) for a in item["attempt_log"]] == [(2, 500), (3, 200)]
    assert len(receiver.requests) == 3
    for request in receiver.requests:           # what each receiver sees: one delivery, signed each time
        assert request.headers["Chainrule-Delivery"] == item["id"]
        assert signing.verify(SECRET, request.headers["Chainrule-Signature"], request.body)
        assert json.loads(request.body) == item["body"]
    assert item["body"]["type"] == "job.succeeded"
    assert item["body"]["data"]["job"] == {**item["body"]["data"]["job"], "id": job["id"], "status": "succeeded"}
    client.delete_webhook(hook_id)
    assert client.list_webhooks()["total"] == 0
    client.close()
