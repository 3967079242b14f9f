"""A typed client generated from /openapi.json by a standard generator (openapi-python-client, from
PyPI) has every operation, and runs upload -> submit -> wait -> weights against a real server."""
from __future__ import annotations

import importlib
import io
import json
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import safetensors.torch

from e2e_support import CEILING_S, HANG_GUARD_S, blobs_csv

pytestmark = pytest.mark.timeout(HANG_GUARD_S)
PACKAGE = "chainrule_generated"
# the generator reads only the binary media types it knows; the plots are image/png, which a user
# maps as here (openapi-python-client's documented content_type_overrides)
GENERATOR_CONFIG = "content_type_overrides:\n  image/png: application/octet-stream\n"


def generate(spec_path, out_dir) -> list[str]:
    """Runs the generator; returns its warnings (an operation it cannot build is one)."""
    exe = shutil.which("openapi-python-client") or pytest.fail("openapi-python-client is not installed "
                                                               "(pip install -e '.[test]')")
    config = out_dir.parent / "generator.yml"
    config.write_text(GENERATOR_CONFIG)
    proc = subprocess.run([exe, "generate", "--path", str(spec_path), "--output-path", str(out_dir),
                           "--meta", "none", "--overwrite", "--config", str(config)],
                          capture_output=True, text=True, timeout=CEILING_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "Unable" in line]


def test_generated_client_has_every_operation_and_runs_a_job(stack_factory, tmp_path, monkeypatch):
    stack = stack_factory("sqlite")
    stack.up()
    spec = httpx.get(stack.api_url + "/openapi.json", timeout=CEILING_S).json()
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    assert generate(tmp_path / "openapi.json", tmp_path / PACKAGE) == []

    operations = {op["operationId"]: (op["tags"][0], path) for path, ops in spec["paths"].items()
                  for op in ops.values()}
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        monkeypatch.delitem(sys.modules, name)
    missing = []
    for operation_id, (tag, path) in operations.items():
        try:
            module = importlib.import_module(f"{PACKAGE}.api.{tag}.{operation_id}")
            assert callable(module.sync_detailed)
        except (ImportError, AttributeError):
            missing.append(f"{operation_id} ({path})")
    assert missing == [] and len(operations) >= 12

    models = importlib.import_module(f"{PACKAGE}.models")
    types = importlib.import_module(f"{PACKAGE}.types")
    client = importlib.import_module(PACKAGE).AuthenticatedClient(base_url=stack.api_url, token=stack.key)

    upload = importlib.import_module(f"{PACKAGE}.api.datasets.upload_dataset")
    body = models.UploadDatasetBody(file=types.File(payload=io.BytesIO(blobs_csv()), file_name="blobs.csv"),
                                    name="blobs")
    dataset = upload.sync(client=client, body=body)
    assert dataset.task.value == "classification" and dataset.task_inferred and dataset.n_rows == 600

    submit = importlib.import_module(f"{PACKAGE}.api.jobs.submit_job")
    job = submit.sync(client=client, body=models.JobSubmit.from_dict({
        "dataset_id": dataset.id, "name": "generated", "tags": ["codegen"],
        "model": {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                             {"type": "linear", "out_features": 3}]},
        "loss": "cross_entropy", "optimizer": "adam", "epochs": 3, "device": "cpu"}))
    assert job.status.value == "queued" and job.name == "generated"

    get_job = importlib.import_module(f"{PACKAGE}.api.jobs.get_job")
    deadline = time.monotonic() + CEILING_S          # polling its status until it ends; a ceiling, not a wait
    while (job := get_job.sync(client=client, job_id=job.id)).status.value not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"job still {job.status.value}"
        time.sleep(0.2)
    assert job.status.value == "succeeded", job.error

    weights = importlib.import_module(f"{PACKAGE}.api.jobs.get_weights").sync_detailed(client=client, job_id=job.id)
    assert weights.status_code == 200
    state = safetensors.torch.load(weights.content)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "0.weight": (8, 4), "0.bias": (8,), "2.weight": (3, 8), "2.bias": (3,)}
