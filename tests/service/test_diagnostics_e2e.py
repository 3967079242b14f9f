"""Diagnostics through real processes (`chainrule api` and `chainrule worker`, SQLite + the embedded
broker): the lr-100 SGD job with stop_on ends failed with code divergence, its findings read by the
CLI and the client; a gradient check from the client; and a trained job's landscape computed by
the chainrule.landscape task on a worker."""
from __future__ import annotations

import json

import pytest

from conftest import iris_like
from e2e_support import CEILING_S, HANG_GUARD_S, blobs_csv, wait_for
from test_client_e2e import cli

pytestmark = pytest.mark.timeout(HANG_GUARD_S)


def test_stop_on_divergence_findings_gradcheck_and_a_landscape_on_a_real_worker(stack_factory):
    stack = stack_factory().up()
    client = stack.client()
    iris = stack.http.post("/v1/datasets", files={"file": ("iris.csv", iris_like(), "text/csv")}).json()
    diverging = stack.submit(iris["id"], model={"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                                                           {"type": "linear", "out_features": 3}]},
                             optimizer={"type": "sgd", "lr": 100.0}, epochs=5, batch_size=4,
                             diagnostics={"stop_on": ["divergence"]})
    failed = stack.wait_job(diverging["id"])
    (divergence,) = client.findings(diverging["id"], code="divergence")
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "divergence", "message": divergence["message"]}
    assert failed["findings"]["counts"]["error"] >= 1 and "diverged" in divergence["message"]

    where = ("--url", stack.api_url, "--key", stack.key)
    table = cli(stack, "jobs", "findings", diverging["id"], *where).stdout
    assert "divergence" in table and "lower lr" in table
    as_json = json.loads(cli(stack, "jobs", "findings", diverging["id"], "--severity", "error", "--json",
                             *where).stdout)
    assert as_json == client.findings(diverging["id"], severity="error") == [divergence]

    report = client.gradcheck({"layers": [{"type": "linear", "out_features": 4}, {"type": "tanh"},
                                          {"type": "linear", "out_features": 3}]},
                              "cross_entropy", dataset_id=iris["id"], batch_size=4)
    assert report["passed"] and [layer["key"] for layer in report["layers"]] == ["0", "2"]

    blobs = stack.upload_csv(blobs_csv(n=300))
    job = stack.wait_job(stack.submit(blobs["id"], epochs=4)["id"])
    assert job["status"] == "succeeded" and job["init_report"]["initial_weights_sha256"]
    assert client.request_landscape(job["id"], samples=128, iterations=40)["status"] == "queued"

    def done():
        body = client.landscape(job["id"])
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None
    landscape = wait_for(done, CEILING_S, 0.2, "the landscape")
    assert landscape["status"] == "succeeded", landscape["error"]
    result = landscape["result"]
    assert result["initial_weights"] == "verified" and result["samples"] == 128
    assert len(result["line"]["losses"]) == 25 and len(result["surface"]["losses"]) == 21
    assert result["line"]["losses"][18] < result["line"]["losses"][6]      # trained beats initial
    assert result["hessian"]["verdict"] in ("minimum", "saddle", "inconclusive") and result["hessian"]["max_eigenvalue"] > 0
