"""Bearer auth and ownership: no key, a bad key or a revoked key is a 401; another key's data is a 404."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from core.keys import KEY_PREFIX, create_key, find_key, hash_key, revoke_key
from core.tables import ApiKey, Job

from conftest import iris_like

ABSENT = "00000000-0000-4000-8000-000000000000"   # a well-formed id that no row has


def test_keys_store_only_an_hmac_and_a_display_prefix(svc):
    with svc.session() as s:
        row, key = create_key(s, "carol", svc.settings)
        stored = s.get(ApiKey, row.id)
        assert key.startswith(KEY_PREFIX) and len(key) >= 40
        assert stored.key_hash == hash_key(svc.settings, key) and len(stored.key_hash) == 64
        assert key not in (stored.key_hash, stored.prefix) and key.startswith(stored.prefix)
        assert find_key(s, svc.settings, key).id == row.id
        assert find_key(s, svc.settings, key + "x") is None
        assert revoke_key(s, row.id).revoked_at is not None
        assert find_key(s, svc.settings, key) is None


def test_hash_depends_on_the_pepper(svc):
    other = svc.settings.model_copy(update={"key_pepper": svc.settings.key_pepper.__class__("another")})
    assert hash_key(svc.settings, "cr_x") != hash_key(other, "cr_x")


@pytest.mark.parametrize("header, words", [
    (None, "missing API key"),
    ("Bearer", "malformed"),
    ("Basic dXNlcjpwYXNz", "malformed"),
    ("Bearer cr_not-a-real-key", "invalid API key"),
    ("Bearer " + "x" * 500, "invalid API key"),
])
def test_missing_malformed_and_unknown_keys_are_401(svc, header, words):
    headers = {"Authorization": header} if header else {}
    r = svc.client.get("/v1/datasets", headers=headers)
    assert r.status_code == 401 and words in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(svc):
    with svc.session() as s:
        row, key = create_key(s, "temp", svc.settings)
        revoke_key(s, row.id)
    r = svc.client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"


def test_revocation_takes_effect_when_the_cache_entry_expires(svc):
    with svc.session() as s:
        row, key = create_key(s, "temp", svc.settings)
    headers = {"Authorization": f"Bearer {key}"}
    assert svc.client.get("/v1/datasets", headers=headers).status_code == 200
    with svc.session() as s:
        revoke_key(s, row.id)
    assert svc.client.get("/v1/datasets", headers=headers).status_code == 200   # cached for a few seconds
    svc.client.app.state.key_cache.clear()                                      # ... as if they passed
    assert svc.client.get("/v1/datasets", headers=headers).status_code == 401


def test_every_route_hides_another_keys_dataset_and_job(svc):
    ds = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(ds["id"]).json()
    with svc.session() as s:  # succeeded, so that weights/predict would answer if ownership were skipped
        s.get(Job, job["id"]).status = "succeeded"
        s.commit()
    calls = [("GET", f"/v1/datasets/{ds['id']}", None), ("DELETE", f"/v1/datasets/{ds['id']}", None),
             ("GET", f"/v1/jobs/{job['id']}", None), ("GET", f"/v1/jobs/{job['id']}/metrics", None),
             ("POST", f"/v1/jobs/{job['id']}/cancel", None), ("GET", f"/v1/jobs/{job['id']}/weights", None),
             ("POST", f"/v1/jobs/{job['id']}/predict", {"inputs": [[1, 2, 3, 4]]})]
    for method, url, body in calls:
        theirs = svc.client.request(method, url, headers=svc.b, json=body)
        missing = svc.client.request(method, url.replace(job["id"], ABSENT).replace(ds["id"], ABSENT),
                                     headers=svc.b, json=body)
        assert theirs.status_code == 404, (method, url, theirs.text)
        assert missing.status_code == 404
        assert theirs.json()["detail"].replace(job["id"], "ID").replace(ds["id"], "ID") == \
            missing.json()["detail"].replace(ABSENT, "ID")  # indistinguishable from absent
    r = svc.submit(ds["id"], headers=svc.b)
    assert r.status_code == 404 and ds["id"] in r.json()["detail"]
    assert svc.client.get("/v1/datasets", headers=svc.b).json()["total"] == 0
    assert svc.client.get("/v1/jobs", headers=svc.b).json()["total"] == 0
    with svc.session() as s:  # and nothing of A's changed
        assert s.scalar(select(Job.status).where(Job.id == job["id"])) == "succeeded"
    assert svc.client.get(f"/v1/datasets/{ds['id']}", headers=svc.a).status_code == 200
