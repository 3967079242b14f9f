"""GET /v1/jobs/{id}/script.py end to end: float64 jobs trained by worker.runner in process, their
scripts and dataset files downloaded through the API and run in a fresh interpreter (isolated: the script
imports only torch and safetensors); the script's final weights equal the service's to 1e-9.
An MLP with Adam and a warmed-up cosine schedule (dropout, so the masks must match), a CNN with
batchnorm and SGD + Nesterov momentum, a DAG (residual add and concat) with RMSprop, gradient
clipping and a step schedule, early stopping that restores its best epoch, standardized inputs and
targets with AdamW, a sequence classifier (attention, pooling that leaves padding out) and a 2-block GPT
with dropout and a tied head trained on a text's random windows."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load, load_file

from conftest import csv_bytes, iris_like, npz_bytes
from sequence_support import gpt
from test_language_model_jobs import TEXT, gpt_job
from test_sequence_classifier_predict import MODEL as SEQUENCE_CLASSIFIER, reviews
from worker import runner

pytestmark = pytest.mark.timeout(180)
CPU = torch.device("cpu")

MLP = {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "dropout", "p": 0.2},
                  {"type": "linear", "out_features": 16, "init": "xavier_normal"}, {"type": "tanh"},
                  {"type": "linear", "out_features": 3}]}
CNN = {"layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}, {"type": "batchnorm"},
                  {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2},
                  {"type": "conv2d", "out_channels": 6, "kernel_size": 2, "bias": False},
                  {"type": "avgpool2d", "kernel_size": 3}, {"type": "flatten"}, {"type": "linear", "out_features": 8},
                  {"type": "batchnorm"}, {"type": "gelu"}, {"type": "linear", "out_features": 2}]}
DAG = {"layers": [{"type": "linear", "name": "stem", "out_features": 12},
                  {"type": "layernorm", "name": "norm"},
                  {"type": "linear", "name": "branch", "out_features": 12, "inputs": ["norm"]},
                  {"type": "leaky_relu", "name": "act", "negative_slope": 0.1},
                  {"type": "add", "name": "residual", "inputs": ["stem", "act"]},
                  {"type": "concat", "name": "both", "inputs": ["residual", "input"]},
                  {"type": "linear", "name": "head", "out_features": 3}]}


def images(n: int = 40) -> bytes:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 2, 8, 8)).astype(np.float32)
    y = (X[:, 0, :4].mean(axis=(1, 2)) > X[:, 1, 4:].mean(axis=(1, 2))).astype(np.int64)
    return npz_bytes(X=X, y=y)


def regression(n: int = 45) -> bytes:
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.normal(0, 1, n), rng.normal(50, 10, n), rng.normal(-3, 0.1, n)])
    y = X @ np.array([2.0, 0.1, -5.0]) + rng.normal(0, 0.5, n)
    return csv_bytes(["a", "b", "c", "y"], [[*np.round(r, 5), round(t, 5)] for r, t in zip(X, y)])


def run_job(svc, dataset_id: str, **request) -> str:
    r = svc.submit(dataset_id, dtype="float64", **request)
    assert r.status_code == 202, r.text
    assert runner.run_job(svc.settings, r.json()["id"], CPU) == "succeeded"
    return r.json()["id"]


def run_script(svc, tmp_path, job_id: str, dataset_id: str) -> tuple[dict, str]:
    """The job's script run on its downloaded dataset: (its final weights, its output)."""
    script = svc.client.get(f"/v1/jobs/{job_id}/script.py", headers=svc.a)
    assert script.status_code == 200, script.text
    assert script.headers["content-type"].startswith("text/x-python")
    data = svc.client.get(f"/v1/datasets/{dataset_id}/file", headers=svc.a)
    assert data.status_code == 200
    (tmp_path / "job.py").write_text(script.text)
    (tmp_path / "data.safetensors").write_bytes(data.content)
    run = subprocess.run([sys.executable, "-I", "job.py", "data.safetensors", "--out", "out.safetensors"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return load_file(tmp_path / "out.safetensors"), run.stdout


def assert_same_weights(svc, job_id: str, script_weights: dict) -> float:
    served = load(svc.client.get(f"/v1/jobs/{job_id}/weights", headers=svc.a).content)
    assert list(script_weights) and set(script_weights) == set(served)
    worst = max(float((script_weights[k].double() - served[k].double()).abs().max()) for k in served)
    assert worst <= 1e-9, worst
    moved = [k for k in served if served[k].is_floating_point() and served[k].numel() > 1]
    assert moved                                                 # the comparison is not of nothing
    return worst


CASES = {   # name: (dataset upload, the job given the uploaded dataset)
    "mlp_adam_cosine_dropout": ((iris_like(60), "iris.csv", {}), lambda ds: dict(
        model=MLP, loss={"type": "cross_entropy", "label_smoothing": 0.1}, optimizer={"type": "adam", "lr": 0.01},
        schedule={"type": "cosine", "warmup_steps": 3, "eta_min": 0.001}, epochs=4, batch_size=8,
        validation_split=0.2, seed=3)),
    "cnn_batchnorm_sgd_momentum": ((images(), "images.npz", {}), lambda ds: dict(
        model=CNN, loss="cross_entropy", optimizer={"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                                                    "weight_decay": 1e-4},
        schedule={"type": "exponential", "gamma": 0.9}, epochs=3, batch_size=9, validation_split=0.25, seed=5)),
    "dag_rmsprop_clip_step": ((iris_like(48), "iris.csv", {}), lambda ds: dict(
        model=DAG, loss="cross_entropy", optimizer={"type": "rmsprop", "lr": 0.01, "momentum": 0.5, "centered": True},
        schedule={"type": "step", "step_size": 4, "gamma": 0.5}, grad_clip_norm=0.5, shuffle=True, epochs=3,
        batch_size=6, validation_split=0.25, seed=11)),
    "early_stopping_restores_the_best_epoch": ((iris_like(60), "iris.csv", {}), lambda ds: dict(
        model=MLP, loss="cross_entropy", optimizer={"type": "sgd", "lr": 0.3, "momentum": 0.9}, epochs=40,
        batch_size=16, validation_split=0.25, seed=2,
        early_stopping={"monitor": "val_loss", "patience": 3, "restore_best": True})),
    "standardized_regression_adamw": ((regression(), "reg.csv", {"target": "y", "task": "regression"}), lambda ds: dict(
        model={"layers": [{"type": "linear", "out_features": 8}, {"type": "gelu", "approximate": "tanh"},
                          {"type": "linear", "out_features": 1}]},
        loss={"type": "huber", "delta": 0.5}, optimizer={"type": "adamw", "lr": 0.02},
        preprocessing={"standardize": "both"}, epochs=3, batch_size=7, validation_split=0.2, shuffle=False, seed=1)),
    "sequence_classifier_attention_padding": ((reviews(), "reviews.csv", {"text_column": "review"}), lambda ds: dict(
        model=SEQUENCE_CLASSIFIER, loss="cross_entropy", optimizer={"type": "adam", "lr": 0.02}, epochs=2,
        batch_size=16, validation_split=0.2, seed=6)),
    "gpt_with_dropout_on_a_text": ((TEXT, "sentence.txt", {"tokenizer": "char"}), lambda ds: dict(
        loss="cross_entropy", **gpt_job(ds["vocab_size"], epochs=2, steps_per_epoch=6,
                                        model=gpt(vocab=ds["vocab_size"], dim=16, context=16, blocks=2, heads=2,
                                                  dropout=0.1),
                                        schedule={"type": "cosine", "warmup_steps": 2}))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_script_trains_the_jobs_weights_again_in_plain_pytorch(svc, tmp_path, case):
    (content, filename, fields), make_request = CASES[case]
    dataset = svc.dataset(content, filename, **fields)
    request = make_request(dataset)
    job_id = run_job(svc, dataset["id"], **request)
    weights, stdout = run_script(svc, tmp_path, job_id, dataset["id"])
    assert_same_weights(svc, job_id, weights)
    job = svc.client.get(f"/v1/jobs/{job_id}", headers=svc.a).json()
    epochs = job["result"]["epochs_completed"]
    assert f"epoch {epochs}: train_loss" in stdout and f"epoch {epochs + 1}:" not in stdout
    if "early_stopping" in request:                      # it stopped early, and not on its best epoch
        assert job["result"]["status"] == "early_stopped" and job["result"]["best_epoch"] < epochs
        assert "early stopping" in stdout


def test_the_script_reads_as_the_job(svc):
    dataset = svc.dataset(iris_like(), "iris.csv")
    r = svc.submit(dataset["id"], model=DAG, dtype="float64")
    script = svc.client.get(f"/v1/jobs/{r.json()['id']}/script.py", headers=svc.a).text
    for line in ("self.stem = nn.Linear(4, 12)", "self.norm = nn.LayerNorm(12)",
                 "residual = self.residual(stem, act)", "both = self.both(residual, x)",
                 "torch.optim.Adam(\n        network.parameters(), lr=0.01,", "foreach=False,",
                 "loss_fn = nn.CrossEntropyLoss()",
                 "SEED = 0", "DTYPE = torch.float64", "BATCH_SIZE = 4", "EPOCHS = 2"):
        assert line in script, line
    compile(script, "job.py", "exec")


def test_another_keys_dataset_file_and_script_are_404_and_without_its_dataset_409(svc):
    dataset = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(dataset["id"]).json()
    assert svc.client.get(f"/v1/datasets/{dataset['id']}/file", headers=svc.b).status_code == 404
    assert svc.client.get(f"/v1/jobs/{job['id']}/script.py", headers=svc.b).status_code == 404
    svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a)
    assert svc.client.delete(f"/v1/datasets/{dataset['id']}", headers=svc.a).status_code == 204
    r = svc.client.get(f"/v1/jobs/{job['id']}/script.py", headers=svc.a)
    assert r.status_code == 409 and "deleted" in r.json()["detail"]
