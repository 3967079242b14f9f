"""worker.runner in process: one job attempt against a real SQLite database, artifact store and
embedded broker, without Celery in between (the e2e tests cover the processes)."""
from __future__ import annotations

import json
import threading

import pytest
import safetensors
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from core import artifacts
from core.db import get_engine, get_sessionmaker, upgrade
from core.jobspec import JobRequest
from core.keys import create_key
from core.tables import Dataset, Job, JobMetric
from core.settings import Settings
from worker import runner
from worker.callbacks import SHUTDOWN, json_safe

pytestmark = pytest.mark.timeout(120)
CPU = torch.device("cpu")


@pytest.fixture
def lab(tmp_path):
    torch.set_num_threads(1)
    settings = Settings(data_dir=tmp_path / "data", heartbeat_interval_s=0.2, cancel_poll_interval_s=0.1,
                        progress_interval_s=0.1)
    upgrade(settings.database_url)
    Session = get_sessionmaker(settings.database_url)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 4, generator=g) * 3
    y = torch.randint(0, 3, (600,), generator=g)
    X = (centres[y] + torch.randn(600, 4, generator=g)).float()
    with Session() as s:
        owner, _ = create_key(s, "runner", settings)
        ds = Dataset(owner_id=owner.id, name="blobs", format="csv", task="classification", n_rows=600,
                     input_shape=[4], n_outputs=3, target="label", classes=["a", "b", "c"], size_bytes=0, path="")
        s.add(ds)
        s.commit()
        ds.path = artifacts.dataset_relpath(ds.id)
        s.commit()
        path = artifacts.resolve(settings, ds.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"X": X, "y": y}, str(path))
        owner_id, dataset_id, dataset_path = owner.id, ds.id, path

    class Lab:
        pass
    lab = Lab()
    lab.settings, lab.dataset_path, lab.dataset_id = settings, dataset_path, dataset_id

    def submit(**overrides) -> str:
        body = {"dataset_id": dataset_id, "loss": "cross_entropy", "epochs": 5, "batch_size": 32,
                "optimizer": {"type": "adam", "lr": 0.01}, "device": "cpu",
                "model": {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"},
                                     {"type": "linear", "out_features": 3}]}}
        body.update(overrides)
        req = JobRequest.model_validate(body)
        with Session() as s:
            job = Job(owner_id=owner_id, dataset_id=dataset_id, status="queued", request=req.model_dump(mode="json"),
                      device=req.device, queue="cpu", n_parameters=1, max_attempts=3)
            s.add(job)
            s.commit()
            return job.id

    def get(job_id: str) -> Job:
        with Session() as s:
            return s.get(Job, job_id)

    def metrics(job_id: str) -> list[int]:
        with Session() as s:
            return list(s.scalars(select(JobMetric.epoch).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)))

    lab.submit, lab.get, lab.metrics = submit, get, metrics
    yield lab
    SHUTDOWN.clear()
    get_engine(settings.database_url).dispose()


def test_a_job_succeeds_with_metrics_weights_and_progress(lab):
    job_id = lab.submit(epochs=5)
    assert runner.run_job(lab.settings, job_id, CPU) == "succeeded"
    job = lab.get(job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.fraction == 1.0 and job.epoch == 5
    assert job.result["epochs_completed"] == 5 and job.result["status"] == "completed"
    assert lab.metrics(job_id) == [1, 2, 3, 4, 5]
    assert job.latest_metrics["epoch"] == 5 and "layers" in job.latest_metrics
    path = artifacts.resolve(lab.settings, job.weights_path)
    state = load_file(str(path))
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"} and state["0.weight"].shape == (16, 4)
    assert all(t.is_contiguous() for t in state.values())
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["input_shape"]) == [4] and json.loads(meta["classes"]) == ["a", "b", "c"]
    assert runner.run_job(lab.settings, job_id, CPU) == "skipped"     # a duplicate message


def test_missing_dataset_file_fails_the_job_with_a_reason(lab):
    lab.dataset_path.unlink()
    job_id = lab.submit()
    assert runner.run_job(lab.settings, job_id, CPU) == "failed"
    job = lab.get(job_id)
    assert job.status == "failed" and job.error_code == "dataset_missing" and "upload it again" in job.error_message


def test_an_unexpected_exception_fails_the_job_as_internal_error_naming_it(lab):
    lab.dataset_path.write_bytes(b"\x00\x01 this is not a safetensors file")
    job_id = lab.submit()
    assert runner.run_job(lab.settings, job_id, CPU) == "failed"
    job = lab.get(job_id)
    assert job.status == "failed" and job.error_code == "internal_error"
    assert "SafetensorError" in job.error_message and job.finished_at is not None


def test_worker_shutdown_hands_the_job_back_and_the_next_attempt_resumes(lab):
    job_id = lab.submit(epochs=200, batch_size=16)
    ckpt = artifacts.resolve(lab.settings, artifacts.checkpoint_relpath(job_id))

    def shut_down_after_a_checkpoint():
        while not ckpt.exists():
            threading.Event().wait(0.01)
        SHUTDOWN.set()        # what Celery's worker_shutting_down signal does
    threading.Thread(target=shut_down_after_a_checkpoint, daemon=True).start()
    assert runner.run_job(lab.settings, job_id, CPU) == "queued"
    job = lab.get(job_id)
    assert job.status == "queued" and job.attempts == 0 and job.sent_at is not None   # sent again at once
    done_before = lab.metrics(job_id)
    assert done_before and done_before[-1] < 400

    SHUTDOWN.clear()
    assert runner.run_job(lab.settings, job_id, CPU) == "succeeded"
    job = lab.get(job_id)
    assert job.attempts == 1 and job.result["resumed_from_epoch"] >= 1
    assert lab.metrics(job_id) == list(range(1, 201))

    # resumed from an epoch-boundary checkpoint (a stop mid-epoch writes none), the run
    # ends bit-identical to one that was never interrupted
    straight = lab.submit(epochs=200, batch_size=16)
    assert runner.run_job(lab.settings, straight, CPU) == "succeeded"
    resumed_w = load_file(str(artifacts.resolve(lab.settings, job.weights_path)))
    straight_w = load_file(str(artifacts.resolve(lab.settings, lab.get(straight).weights_path)))
    assert all(torch.equal(resumed_w[k], straight_w[k]) for k in straight_w)


def test_cancel_flag_stops_a_running_job(lab):
    job_id = lab.submit(epochs=5000, batch_size=16)

    def cancel_when_running():
        while lab.get(job_id).step == 0:
            threading.Event().wait(0.02)
        with get_sessionmaker(lab.settings.database_url)() as s:
            s.get(Job, job_id).cancel_requested = True
            s.commit()
    threading.Thread(target=cancel_when_running, daemon=True).start()
    assert runner.run_job(lab.settings, job_id, CPU) == "cancelled"
    job = lab.get(job_id)
    assert job.status == "cancelled" and job.weights_path is None and job.result["status"] == "cancelled"


def test_json_safe_turns_non_finite_numbers_into_null():
    assert json_safe({"a": float("nan"), "b": [1.0, float("inf")], "c": torch.tensor(2.5)}) == \
        {"a": None, "b": [1.0, None], "c": 2.5}


def test_engine_compile_reaches_the_model_the_worker_trains(lab, monkeypatch):
    # Settings.engine_compile (CHAINRULE_ENGINE_COMPILE) is the model's compile option in the worker; that
    # the compiled formulas give the eager numbers is tests/engine/test_compiled.py's (a network without
    # norms here: nothing to compile, so no seconds of Inductor in this test)
    built = []
    build_model = runner.build_model
    monkeypatch.setattr(runner, "build_model", lambda *a, **kw: built.append(build_model(*a, **kw)) or built[-1])
    for flag in (False, True):
        settings = lab.settings.model_copy(update={"engine_compile": flag})
        assert runner.run_job(settings, lab.submit(epochs=1), CPU) == "succeeded"
    assert [[layer.compile for layer in m.layers] for m in built] == [[False] * 3, [True] * 3]
