"""Memory per job and per request is bounded (issue 8, point 1): a job whose training step cannot fit
max_job_memory_bytes is refused at submit with the estimate; predict runs in chunks that fit
predict_memory_bytes; a worker that runs out of memory fails the job as out_of_memory, once.
The last two measure a real process (peak RSS; an address-space limit), in a subprocess."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[2]
WIDE = {"layers": [{"type": "linear", "out_features": 200_000}, {"type": "relu"},
                   {"type": "linear", "out_features": 3}]}
CONV = {"layers": [{"type": "conv2d", "out_channels": 65_536, "kernel_size": 1}, {"type": "relu"},
                   {"type": "avgpool2d", "kernel_size": 32}, {"type": "flatten"},
                   {"type": "linear", "out_features": 2}]}


def _images(n: int = 70) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, X=np.random.default_rng(0).normal(size=(n, 3, 32, 32)).astype(np.float32), y=np.arange(n) % 2)
    return buf.getvalue()


def test_a_job_whose_activations_cannot_fit_is_422_with_the_estimate(svc):
    """65,536 channels of kernel 1 on 32x32 images: 262k parameters but 805 MB of activations a sample."""
    ds = svc.dataset(_images(), "images.npz")
    r = svc.submit(ds["id"], model=CONV, loss="cross_entropy", batch_size=32)
    assert r.status_code == 422, r.text
    error = r.json()["detail"][0]
    assert error["loc"] == ["body", "batch_size"] and error["type"] == "limit_exceeded"
    assert "per-job memory limit is 4.0 GiB" in error["msg"] and "lower batch_size to at most" in error["msg"]
    fits = int(error["msg"].rsplit("at most ", 1)[1])
    assert 1 <= fits < 32 and svc.submit(ds["id"], model=CONV, loss="cross_entropy", batch_size=fits).status_code == 202


def _run(script: str, timeout: float = 180) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


PREDICT_PEAK = """
import json, pathlib, resource, sys, tempfile
sys.path[:0] = ["tests/service", "tests"]
from conftest import finish, iris_like, make_service
svc = make_service(pathlib.Path(tempfile.mkdtemp()), predict_memory_bytes=64 * 2**20)
ds = svc.dataset(iris_like(), "iris.csv")
job = svc.submit(ds["id"], model=%(model)r).json()
finish(svc, job, ds["input_shape"])
url = f"/v1/jobs/{job['id']}/predict"
assert svc.client.post(url, headers=svc.a, json={"inputs": [[1, 2, 3, 4]]}).status_code == 200
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
r = svc.client.post(url, headers=svc.a, json={"inputs": [[0.5, 1, 2, 3]] * 4096})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"status": r.status_code, "rows": len(r.json().get("outputs", [])), "peak_growth": after - before}))
"""


def test_predict_runs_in_chunks_that_fit_its_memory_budget():
    """4,096 rows through a 200,000-wide layer: 3.3 GB at once, ~64 MB a chunk on a 64 MiB budget."""
    out = _run(PREDICT_PEAK % {"model": WIDE})
    assert out["status"] == 200 and out["rows"] == 4096
    assert out["peak_growth"] < 512 * 2**20, out


WORKER_OOM = """
import json, pathlib, resource, sys, tempfile
import torch
sys.path[:0] = ["tests/service", "tests"]
from conftest import make_service
from core.tables import Job
from test_memory_bounds import _images
from worker import runner
svc = make_service(pathlib.Path(tempfile.mkdtemp()), max_job_memory_bytes=2**50)   # admission lets it through
ds = svc.dataset(_images(), "images.npz")
job = svc.submit(ds["id"], model=%(model)r, loss="cross_entropy", batch_size=64).json()
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 3 * 2**30, resource.RLIM_INFINITY))   # 17 GB will not fit
outcome = runner.run_job(svc.settings, job["id"], torch.device("cpu"))
with svc.session() as s:
    row = s.get(Job, job["id"])
    print(json.dumps({"outcome": outcome, "status": row.status, "code": row.error_code, "attempts": row.attempts}))
"""


def test_a_worker_out_of_memory_fails_the_job_as_out_of_memory_without_retrying():
    out = _run(WORKER_OOM % {"model": CONV})
    assert out == {"outcome": "failed", "status": "failed", "code": "out_of_memory", "attempts": 1}
