"""Housekeeping (issue 8, point 9): an ended job keeps its weights, not its checkpoint; storage per key
has a quota; the key pepper of a deployment that sets none is generated into its data dir; the
SQLite file is its owner's only; the worker's liveness file is under the data dir; every response
carries security headers; a key can see itself."""
from __future__ import annotations

import stat

import pytest
import torch

from core import artifacts
from core.settings import Settings
from worker import runner

from conftest import csv_bytes, iris_like


def test_a_finished_job_keeps_its_weights_and_loses_its_checkpoint(svc):
    ds = svc.dataset(iris_like(60), "iris.csv")
    job = svc.submit(ds["id"], epochs=3).json()
    assert runner.run_job(svc.settings, job["id"], torch.device("cpu")) == "succeeded"
    assert artifacts.resolve(svc.settings, artifacts.weights_relpath(job["id"])).is_file()
    assert not artifacts.resolve(svc.settings, artifacts.checkpoint_relpath(job["id"])).exists()
    me = svc.client.get("/v1/me", headers=svc.a).json()
    weights = artifacts.resolve(svc.settings, artifacts.weights_relpath(job["id"])).stat().st_size
    assert me["usage"]["storage_bytes"] > weights and me["usage"]["active_jobs"] == 0
    assert svc.client.delete(f"/v1/jobs/{job['id']}", headers=svc.a).status_code == 204
    assert not artifacts.resolve(svc.settings, artifacts.job_dir_relpath(job["id"])).exists()


def test_storage_quota_per_key_is_a_413_naming_it(service_factory):
    svc = service_factory(max_storage_bytes_per_key=2000)
    small = csv_bytes(["a", "b", "t"], [[i, i + 1, i % 2] for i in range(40)])   # 824 bytes stored
    ds = svc.dataset(small)
    svc.dataset(small)
    r = svc.upload(small)
    assert r.status_code == 413 and "storage quota is 2,000 bytes" in r.json()["detail"]
    assert "DELETE /v1/datasets" in r.json()["detail"]
    r = svc.submit(ds["id"], model={"layers": [{"type": "linear", "out_features": 2}]})
    assert r.status_code == 202                      # under quota still: a job may produce weights
    assert svc.upload(small, headers=svc.b).status_code == 201       # another key has its own quota


def test_the_pepper_is_generated_into_the_data_dir_once_and_configured_ones_win(tmp_path, monkeypatch):
    from core.settings import PEPPER_FILE

    monkeypatch.delenv("CHAINRULE_KEY_PEPPER", raising=False)
    first, again = Settings(data_dir=tmp_path / "a"), Settings(data_dir=tmp_path / "a")
    other = Settings(data_dir=tmp_path / "b")
    pepper = first.key_pepper.get_secret_value()
    assert len(pepper) >= 48 and pepper == again.key_pepper.get_secret_value() != other.key_pepper.get_secret_value()
    assert stat.S_IMODE((tmp_path / "a" / PEPPER_FILE).stat().st_mode) == 0o600
    monkeypatch.setenv("CHAINRULE_KEY_PEPPER", "configured-secret")
    assert Settings(data_dir=tmp_path / "a").key_pepper.get_secret_value() == "configured-secret"
    monkeypatch.delenv("CHAINRULE_KEY_PEPPER")
    with pytest.raises(ValueError, match="CHAINRULE_KEY_PEPPER"):
        Settings(data_dir=tmp_path / "c", environment="production")


def test_the_sqlite_database_is_readable_by_its_owner_only(svc):
    assert svc.client.get("/v1/jobs", headers=svc.a).status_code == 200
    path = svc.settings.data_dir / "chainrule.sqlite"
    for f in [path, *path.parent.glob("chainrule.sqlite-*")]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_the_worker_liveness_file_is_under_the_data_dir_and_per_host(tmp_path):
    from worker.options import alive_file

    path = alive_file(tmp_path / "data")
    assert path.is_relative_to(tmp_path / "data") and path.name.endswith(".alive") and "worker-" in path.name


@pytest.mark.parametrize("method, url, auth", [("GET", "/v1/jobs", True), ("GET", "/v1/jobs", False),
                                               ("GET", "/docs", False), ("GET", "/healthz", False)])
def test_every_response_carries_security_headers(svc, method, url, auth):
    r = svc.client.request(method, url, headers=svc.a if auth else {})
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "http" not in csp


def test_a_key_sees_itself(svc):
    me = svc.client.get("/v1/me", headers=svc.b).json()
    assert me["name"] == "bob" and svc.key_b.startswith(me["prefix"]) and me["created_at"].endswith("Z")
    assert me["usage"] == {"storage_bytes": 0, "max_storage_bytes": svc.settings.max_storage_bytes_per_key,
                           "active_jobs": 0, "max_concurrent_jobs": svc.settings.max_concurrent_jobs}
    assert svc.client.get("/v1/me").status_code == 401
