"""The API's own flow on PostgreSQL and Redis (started by tests/conftest.py), not only SQLite and the
embedded broker: timezone-aware timestamps, the Core fast path, real enqueue, a Redis readiness ping."""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

from core.tables import Job

from conftest import finish, iris_like, make_service

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def pg_svc(tmp_path, pg_server, redis_server):
    svc = make_service(tmp_path, database_url=pg_server.create_database(), broker_url=redis_server.new_url())
    yield svc
    svc.client.close()


def test_flow_on_postgres_and_redis(pg_svc):
    svc = pg_svc
    assert svc.client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "disk": "ok"}
    ds = svc.dataset(iris_like(), "iris.csv")
    r = svc.submit(ds["id"])
    assert r.status_code == 202, r.text
    job = r.json()
    with svc.session() as s:
        assert s.get(Job, job["id"]).sent_at is not None          # Redis took the message
    polled = svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()
    assert polled == job and polled["created_at"].endswith("Z")
    assert svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.b).status_code == 404
    assert svc.client.get("/v1/jobs?status=queued", headers=svc.a).json()["total"] == 1

    model = finish(svc, job, ds["input_shape"])
    weights = svc.client.get(f"/v1/jobs/{job['id']}/weights", headers=svc.a)
    reference = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    reference.load_state_dict(safetensors.torch.load(weights.content), strict=True)
    rows = [[0.1, 0.2, 0.3, 0.4]]
    out = svc.client.post(f"/v1/jobs/{job['id']}/predict", headers=svc.a, json={"inputs": rows}).json()
    with torch.no_grad():
        assert torch.allclose(torch.tensor(out["outputs"]), reference(torch.tensor(rows)), atol=1e-6)
        assert torch.allclose(model.predict(torch.tensor(rows)), reference(torch.tensor(rows)), atol=1e-6)
    assert svc.client.delete(f"/v1/datasets/{ds['id']}", headers=svc.a).status_code == 204
    assert svc.client.get(f"/v1/jobs/{job['id']}", headers=svc.a).json()["dataset_id"] is None
