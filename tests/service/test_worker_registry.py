"""A job no live worker can take is visible and bounded (issue 8, point 7): workers register what
they consume (core.workers); a cuda job on a deployment without a GPU worker shows
waiting_for "gpu worker", is not sent again and again, and fails as no_worker after worker_wait_s;
with worker_wait_s = 0 it is refused at submit. The end-to-end case runs a real CPU worker."""
from __future__ import annotations

import time

import pytest

from e2e_support import HANG_GUARD_S

from conftest import iris_like


def test_a_cuda_job_without_a_gpu_worker_waits_visibly_then_fails_as_no_worker(service_factory):
    from core import reconciler, workers

    svc = service_factory(worker_wait_s=1.0)
    workers.beat(svc.settings, ["cpu", "auto"], "cpu")          # a CPU worker is alive; no GPU worker
    ds = svc.dataset(iris_like(), "iris.csv")
    cpu = svc.submit(ds["id"], device="cpu").json()
    cuda = svc.submit(ds["id"], device="cuda").json()
    assert cpu["waiting_for"] is None and cuda["waiting_for"] == "gpu worker"
    time.sleep(1.2)
    reconciler.reconcile(svc.settings)
    job = svc.client.get(f"/v1/jobs/{cuda['id']}", headers=svc.a).json()
    assert job["status"] == "failed" and job["error"]["code"] == "no_worker"
    assert "gpu queue" in job["error"]["message"] and "--device cuda" in job["error"]["message"]
    assert svc.client.get(f"/v1/jobs/{cpu['id']}", headers=svc.a).json()["status"] == "queued"


def test_a_gpu_worker_that_appears_takes_the_waiting_job(service_factory):
    from core import reconciler, workers

    svc = service_factory()
    ds = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(ds["id"], device="cuda").json()
    assert job["waiting_for"] == "gpu worker"
    workers.beat(svc.settings, ["gpu", "auto"], "cuda")
    reconciler.reconcile(svc.settings)
    assert svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()["waiting_for"] is None


def test_with_no_wait_a_job_no_worker_can_take_is_409_at_submit(service_factory):
    from core import workers

    svc = service_factory(worker_wait_s=0)
    workers.beat(svc.settings, ["cpu", "auto"], "cpu")
    ds = svc.dataset(iris_like(), "iris.csv")
    r = svc.submit(ds["id"], device="cuda")
    assert r.status_code == 409 and "gpu worker" in r.json()["detail"] and "device auto or cpu" in r.json()["detail"]
    assert svc.submit(ds["id"], device="cpu").status_code == 202


@pytest.mark.timeout(HANG_GUARD_S)
def test_end_to_end_a_cpu_only_deployment_fails_a_cuda_job_with_a_reason(stack_factory):
    from e2e_support import blobs_csv

    stack = stack_factory(worker_wait_s=4).up()
    ds = stack.upload_csv(blobs_csv(n=60))
    cpu = stack.submit(ds["id"], epochs=2)
    cuda = stack.submit(ds["id"], epochs=2, device="cuda")
    assert cpu["waiting_for"] is None and cuda["waiting_for"] == "gpu worker"
    assert stack.wait_job(cpu["id"])["status"] == "succeeded"
    failed = stack.wait_job(cuda["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "no_worker"
    gpu_messages = list((stack.data_dir / "broker" / "queue").glob("*.gpu.msg"))
    assert len(gpu_messages) <= 1       # sent once at submit, never resent while nobody could take it
