"""`chainrule jobs export` and `chainrule jobs script` as a user runs them, against a real `chainrule
serve`: a float64 job trained by its worker, exported as ONNX (onnxruntime answers as the engine on the
job's weights) and as a script that, run on the dataset file the command fetched, ends with those weights."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load_file

from e2e_support import blobs_csv
from engine import Model
from test_client_e2e import cli, served

pytestmark = pytest.mark.timeout(240)
MODEL = {"layers": [{"type": "linear", "out_features": 16}, {"type": "relu"}, {"type": "dropout", "p": 0.1},
                    {"type": "linear", "out_features": 3}]}
JOB = {"model": MODEL, "loss": "cross_entropy", "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
       "schedule": {"type": "step", "step_size": 10, "gamma": 0.5}, "epochs": 3, "batch_size": 16,
       "validation_split": 0.2, "device": "cpu", "dtype": "float64", "seed": 4}


def test_export_onnx_and_the_script_through_the_cli(stack_factory):
    stack = served(stack_factory)
    root = stack.root
    (root / "blobs.csv").write_bytes(blobs_csv(n=120))
    (root / "job.json").write_text(json.dumps(JOB))
    cli(stack, "login", "--url", stack.api_url, "--key", stack.key)
    dataset = json.loads(cli(stack, "datasets", "upload", "blobs.csv", "--json").stdout)
    submitted = cli(stack, "jobs", "submit", "job.json", "--dataset", dataset["id"], "--json", "--watch")
    job_id = json.loads(submitted.stdout.splitlines()[0])["id"]
    assert "succeeded" in submitted.stdout

    cli(stack, "jobs", "export", job_id, "--format", "onnx", "-o", "model.onnx")
    cli(stack, "jobs", "export", job_id, "--format", "safetensors", "-o", "served.safetensors")
    served_weights = load_file(root / "served.safetensors")
    model = Model.from_spec(MODEL, (4,), dtype=torch.float64)
    model.load_state_dict(served_weights)
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    session = onnxruntime.InferenceSession(str(root / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": x.float().numpy()})
    with torch.no_grad():
        expected = model.forward(x, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

    out = cli(stack, "jobs", "script", job_id, "-o", "job.py", "--dataset", "data.safetensors")
    assert "python job.py data.safetensors" in out.stdout
    run = subprocess.run([sys.executable, "-I", "job.py", "data.safetensors", "--out", "again.safetensors"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    again = load_file(root / "again.safetensors")
    assert set(again) == set(served_weights)
    assert max(float((again[k] - served_weights[k]).abs().max()) for k in again) <= 1e-9

    missing = cli(stack, "jobs", "export", "00000000-0000-4000-8000-000000000000", check=False)
    assert missing.returncode == 1 and "404" in missing.stderr
