"""End to end through HTTP with real `chainrule api` and `chainrule worker` processes.

Data: a generated 3-class set (Gaussian blobs, tests/e2e_support.blobs_csv). Timings are the
short FAST_TIMINGS of e2e_support (heartbeat timeout 3 s, reconciler every 0.5 s).
"""
from __future__ import annotations

import json
import math
import signal
import socket
import time
from datetime import timedelta

import pytest
import safetensors
import safetensors.torch
import torch

from e2e_support import CEILING_S, HANG_GUARD_S, blobs_csv, children_of, free_port, pid_alive, wait_for

pytestmark = pytest.mark.timeout(HANG_GUARD_S)

LONG_JOB = {  # ~10 ms per epoch of pure math here; thousands of epochs keep a worker busy long enough
    "epochs": 3000, "batch_size": 64,
    "model": {"layers": [{"type": "linear", "out_features": 64}, {"type": "relu"},
                         {"type": "linear", "out_features": 3}]},
}


def twin(layers: list[dict], in_features: int) -> torch.nn.Sequential:
    """The torch.nn network a spec of linear / relu layers describes."""
    modules, width = [], in_features
    for layer in layers:
        if layer["type"] == "linear":
            modules.append(torch.nn.Linear(width, layer["out_features"]))
            width = layer["out_features"]
        else:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


@pytest.mark.parametrize("backend", [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis]),
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                      reason="needs a CUDA device")]),
])
def test_job_trains_end_to_end_and_weights_load_into_torch(stack_factory, backend):
    stack = stack_factory("sqlite" if backend == "cuda" else backend)
    if backend == "cuda":   # a GPU worker on the gpu queue; the job asks for cuda
        stack.create_key()
        stack.start_api()
        stack.start_worker(queues="gpu,auto", device="cuda")
        stack.wait_api()
        stack.wait_worker()
    else:
        stack.up(cli_key=True)
    ds = stack.upload_csv(blobs_csv())
    assert ds["n_rows"] == 600 and ds["input_shape"] == [4] and len(ds["classes"]) == 3

    job = stack.submit(ds["id"], epochs=8, device="cuda" if backend == "cuda" else "cpu")
    assert job["status"] == "queued"
    done = stack.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["worker_host"] == socket.gethostname()
    if backend == "cuda":
        assert done["worker_device"].startswith("cuda:0 (")
    else:
        assert done["worker_device"] == "cpu"
    assert done["progress"]["fraction"] == 1.0 and done["progress"]["epoch"] == 8
    assert done["result"]["epochs_completed"] == 8 and done["result"]["resumed_from_epoch"] is None

    epochs = stack.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"]
    assert [m["epoch"] for m in epochs] == list(range(1, 9))
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]          # it learned
    assert epochs[-1]["val_accuracy"] > 0.8                          # blobs are easy
    for m in epochs:                                                 # gradient health per layer
        assert set(m["layers"]) == {"0", "1", "2"}
        for key in ("0", "2"):
            health = m["layers"][key]
            assert health["type"] == "linear"
            assert math.isfinite(health["grad_norm"]) and health["grad_norm"] > 0
            assert health["weight_norm"] > 0
        assert 0.0 <= m["layers"]["1"]["dead_fraction"] <= 1.0

    r = stack.http.get(f"/v1/jobs/{job['id']}/weights")
    assert r.status_code == 200
    state = safetensors.torch.load(r.content)
    net = twin(job["request"]["model"]["layers"], 4)
    net.load_state_dict(state, strict=True)
    path = stack.root / "weights.safetensors"
    path.write_bytes(r.content)
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["input_shape"]) == [4]
    assert json.loads(meta["model_spec"])["layers"][0]["out_features"] == 32

    inputs = [[0.5, -1.0, 2.0, 0.1], [-3.0, 1.5, 0.0, 2.2], [1.0, 1.0, 1.0, 1.0]]
    r = stack.http.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    with torch.no_grad():
        expected = net(torch.tensor(inputs, dtype=torch.float32))
    assert torch.allclose(torch.tensor(r.json()["outputs"]), expected, atol=1e-5)


def test_cancel_queued_and_running_jobs(stack_factory):
    stack = stack_factory().up()
    ds = stack.upload_csv(blobs_csv())

    # queued: a cuda job waits on the gpu queue, which no worker here consumes
    queued = stack.submit(ds["id"], device="cuda")
    assert queued["queue"] == "gpu"
    stack.wait_sweeps("worker", 2)   # the job stays queued over two sweeps: nobody claims it
    assert stack.job(queued["id"])["status"] == "queued"
    r = stack.http.post(f"/v1/jobs/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert stack.job(queued["id"])["attempts"] == 0

    # running: cancelled at the worker's next poll, and the worker is free again
    running = stack.submit(ds["id"], **LONG_JOB)
    wait_for(lambda: stack.job(running["id"])["progress"]["step"] > 0, CEILING_S, 0.05, "the long job to make progress")
    t0 = time.monotonic()
    assert stack.http.post(f"/v1/jobs/{running['id']}/cancel").status_code == 200
    done = stack.wait_job(running["id"], statuses=("cancelled", "succeeded", "failed"))
    took = time.monotonic() - t0
    assert done["status"] == "cancelled", done
    # how soon is a latency (bench/, not a timed test: a loaded machine stretches it); stopped mid-run it must be
    print(f"\n[measured] running job cancelled {took:.2f} s after POST /cancel")
    assert done["finished_at"] is not None and done["progress"]["epoch"] < LONG_JOB["epochs"]

    after = stack.submit(ds["id"], epochs=2)
    assert stack.wait_job(after["id"])["status"] == "succeeded"


def _wait_checkpointed(stack, job_id: str, min_epoch: int = 2) -> int:
    """Wait until the job's checkpoint file holds epoch >= min_epoch; returns that epoch."""
    from core.tables import Job
    from engine import checkpoint

    def checkpointed():
        with stack.session() as s:
            path = s.get(Job, job_id).checkpoint_path
        if path is None or not (stack.data_dir / "artifacts" / path).exists():
            return None
        epoch = checkpoint.load(stack.data_dir / "artifacts" / path).epoch
        return epoch if epoch >= min_epoch else None
    return wait_for(checkpointed, CEILING_S, 0.02, f"job {job_id} to checkpoint epoch {min_epoch}")


def test_killed_worker_job_resumes_on_another_worker(stack_factory):
    stack = stack_factory().up()
    ds = stack.upload_csv(blobs_csv())
    epochs = 300   # a few seconds: the kill lands right after the first checkpoint (end of epoch 1)
    job = stack.submit(ds["id"], epochs=epochs, batch_size=16,
                       model={"layers": [{"type": "linear", "out_features": 128}, {"type": "relu"},
                                         {"type": "linear", "out_features": 3}]})
    checkpointed = _wait_checkpointed(stack, job["id"], min_epoch=1)
    first = stack.procs["worker"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = stack.job(job["id"])
    assert killed_at["status"] == "running" and killed_at["progress"]["epoch"] < epochs, "the job ended before the kill"

    stack.start_worker("worker2")
    done = stack.wait_job(job["id"], watch=("api", "worker2"))
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["result"]["resumed_from_epoch"] >= checkpointed >= 1   # not restarted from 0
    assert done["result"]["epochs_completed"] == epochs
    assert len(done["result"]["retries"]) == 1 and done["result"]["retries"][0]["attempt"] == 1
    got = [m["epoch"] for m in stack.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"]]
    assert got == list(range(1, epochs + 1))                  # each epoch once, none lost or doubled


def test_killed_worker_out_of_attempts_fails_worker_lost(stack_factory):
    stack = stack_factory(max_attempts=1).up()
    ds = stack.upload_csv(blobs_csv())
    job = stack.submit(ds["id"], **LONG_JOB)
    _wait_checkpointed(stack, job["id"], min_epoch=1)
    stack.procs["worker"].send_signal(signal.SIGKILL)
    stack.procs["worker"].wait()
    t0 = time.monotonic()
    done = stack.wait_job(job["id"], watch=("api",))   # the API's reconciler decides
    assert done["status"] == "failed", done
    took = time.monotonic() - t0
    print(f"\n[measured] SIGKILLed worker's job failed worker_lost {took:.2f} s after the kill "
          "(heartbeat timeout 3 s)")
    assert done["attempts"] == 1
    assert done["error"]["code"] == "worker_lost"
    message = done["error"]["message"]
    assert f"host {socket.gethostname()}" in message and "last heartbeat at" in message
    assert "gave up after 1 attempt" in message


def test_non_finite_loss_fails_naming_step_and_layer(stack_factory):
    stack = stack_factory().up()
    ds = stack.upload_csv(blobs_csv())
    job = stack.submit(ds["id"], optimizer={"type": "sgd", "lr": 100.0, "momentum": 0.9}, epochs=5)
    done = stack.wait_job(job["id"])
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "non_finite"
    message = done["error"]["message"]
    assert "at step" in message and "(epoch" in message and "layer" in message, message
    assert stack.http.get(f"/v1/jobs/{job['id']}/weights").status_code == 409


def test_reconciler_sends_a_job_the_broker_never_got(stack_factory):
    """A broker outage at submit time: the row is committed, sent_at stays NULL. Simulated by
    inserting the row directly; the reconciler must send it and a worker must run it."""
    from core.jobspec import JobRequest
    from core.tables import ApiKey, Job, utcnow
    from core.broker import send
    from sqlalchemy import select

    stack = stack_factory().up()
    ds = stack.upload_csv(blobs_csv())
    request = JobRequest.model_validate({
        "dataset_id": ds["id"], "loss": "cross_entropy", "epochs": 3, "device": "cpu",
        "model": {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                             {"type": "linear", "out_features": 3}]}})
    with stack.session() as s:
        owner = s.scalar(select(ApiKey).where(ApiKey.name == "e2e"))
        row = Job(owner_id=owner.id, dataset_id=ds["id"], status="queued",
                  request=request.model_dump(mode="json"), device="cpu", queue="cpu",
                  n_parameters=8 * 4 + 8 + 3 * 8 + 3, max_attempts=3,
                  created_at=utcnow() - timedelta(seconds=5), sent_at=None)
        s.add(row)
        s.commit()
        job_id = row.id

    done = stack.wait_job(job_id)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    with stack.session() as s:
        assert s.get(Job, job_id).sent_at is not None

    # a duplicate message for a finished job is a no-op: no second attempt, nothing changes
    send(stack.settings(), job_id, "cpu")
    wait_for(lambda: f"job {job_id} is succeeded; this message is a duplicate" in stack.log_tail("worker", 100_000),
             CEILING_S, 0.05, "the worker to take the duplicate message")
    again = stack.job(job_id)
    assert again["status"] == "succeeded" and again["attempts"] == 1
    assert again["finished_at"] == done["finished_at"]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-process"])
def test_serve_answers_and_stops_with_its_workers(stack_factory, how):
    """Ctrl-C is SIGINT to the whole foreground process group; `docker stop` / systemd send
    SIGTERM to the process alone. Either way serve and all its workers exit, and a running job
    goes back to the queue (not spending an attempt) to resume from its checkpoint later."""
    import os

    import httpx
    from core.tables import Job

    stack = stack_factory()
    stack.create_key_in_process()
    port = free_port()
    workers_n = 2 if how == "ctrl-c" else 1
    serve = stack.spawn("serve", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers_n),
                        new_session=True)
    stack.api_url = base = f"http://127.0.0.1:{port}"

    def healthy():
        stack.check_alive("serve")
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    wait_for(healthy, CEILING_S, 0.1, "chainrule serve to answer /healthz")
    docs = httpx.get(base + "/docs", timeout=CEILING_S)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    wait_for(lambda: f"Swagger UI: {base}/docs" in stack.log_tail("serve", 100_000), CEILING_S, 0.1,
             "the Swagger URL")
    workers = wait_for(lambda: len(children_of(serve.pid)) == workers_n and children_of(serve.pid), CEILING_S, 0.1,
                       "serve's worker processes")

    ds = stack.upload_csv(blobs_csv())
    job = stack.submit(ds["id"], **LONG_JOB)
    _wait_checkpointed(stack, job["id"], min_epoch=1)

    t0 = time.monotonic()
    if how == "ctrl-c":
        os.killpg(serve.pid, signal.SIGINT)
    else:
        serve.send_signal(signal.SIGTERM)
    code = serve.wait(timeout=CEILING_S)
    took = time.monotonic() - t0
    print(f"\n[measured] chainrule serve ({how}, {workers_n} workers, a job running) stopped in {took:.2f} s")
    assert code == 0, stack.log_tail("serve")
    assert not [p for p in workers if pid_alive(p)], "worker processes outlived chainrule serve"
    with stack.session() as s:
        row = s.get(Job, job["id"])
        assert row.status == "queued" and row.attempts == 0, (row.status, row.attempts)
        assert row.checkpoint_path is not None
