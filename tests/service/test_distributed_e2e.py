"""`chainrule jobs submit --processes 2` against real processes: `chainrule serve` (embedded: SQLite, the
server-less broker) and `chainrule api` + `worker` on PostgreSQL + Redis. The worker spawns the job's two
rank processes; the job succeeds with the global curves and each rank's step time."""
from __future__ import annotations

import json

import pytest

from e2e_support import blobs_csv
from test_client_e2e import JOB, cli, served

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("backend", [
    "sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])])
def test_a_two_process_job_trains_to_success_through_the_cli(stack_factory, backend):
    stack = served(stack_factory) if backend == "sqlite" else stack_factory(backend).up()
    (stack.root / "blobs.csv").write_bytes(blobs_csv(n=160))
    (stack.root / "job.json").write_text(json.dumps({**JOB, "epochs": 3}))
    login = ("--url", stack.api_url, "--key", stack.key)
    dataset = json.loads(cli(stack, "datasets", "upload", "blobs.csv", "--json", *login).stdout)
    run = cli(stack, "jobs", "submit", "job.json", "--dataset", dataset["id"], "--processes", "2", "--watch",
              *login)
    assert "epoch 3/3" in run.stdout and "succeeded" in run.stdout, run.stdout
    job = stack.http.get("/v1/jobs", params={"limit": 1}).json()["items"][0]
    assert job["status"] == "succeeded"
    assert stack.http.get(f"/v1/jobs/{job['id']}").json()["request"]["distributed"]["processes"] == 2
    last = stack.http.get(f"/v1/jobs/{job['id']}/metrics").json()["epochs"][-1]
    assert last["world_size"] == 2 and len(last["rank_step_time_s"]) == 2
    assert stack.http.get(f"/v1/jobs/{job['id']}/weights").status_code == 200
