"""Jobs carry an optional name and tags; GET /v1/jobs filters by status, name and tag."""
from __future__ import annotations

from sqlalchemy import func, select

from conftest import iris_like
from core.tables import JobTag


def ids(svc, query: str, headers=None) -> set[str]:
    r = svc.client.get(f"/v1/jobs?{query}", headers=headers or svc.a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"])
    return {j["id"] for j in body["items"]}


def test_list_filters_by_name_tag_and_status(service_factory):
    svc = service_factory(max_concurrent_jobs=10)
    ds = svc.dataset(iris_like(), "iris.csv")
    a = svc.submit(ds["id"], name="  mlp  ", tags=["lr-sweep", "v1"]).json()
    b = svc.submit(ds["id"], name="mlp", tags=["v1"]).json()
    c = svc.submit(ds["id"], tags=["v2", "v2"]).json()
    assert a["name"] == "mlp" and a["tags"] == ["lr-sweep", "v1"] and c["name"] is None and c["tags"] == ["v2"]
    assert svc.client.get(f"/v1/jobs/{a['id']}", headers=svc.a).json()["tags"] == ["lr-sweep", "v1"]

    assert ids(svc, "name=mlp") == {a["id"], b["id"]}
    assert ids(svc, "tag=v1") == {a["id"], b["id"]}
    assert ids(svc, "tag=v1&tag=lr-sweep") == {a["id"]}          # every tag given
    assert ids(svc, "tag=v2&name=mlp") == set()
    svc.client.post(f"/v1/jobs/{b['id']}/cancel", headers=svc.a)
    assert ids(svc, "status=cancelled&tag=v1") == {b["id"]}
    assert ids(svc, "tag=v1", headers=svc.b) == set()              # another key's jobs are not listed

    assert svc.client.delete(f"/v1/jobs/{b['id']}", headers=svc.a).status_code == 204
    with svc.session() as s:
        assert s.scalar(select(func.count()).select_from(JobTag).where(JobTag.job_id == b["id"])) == 0


def test_bad_names_and_tags_are_422_naming_the_field(svc, iris):
    for overrides, where in [({"tags": ["has space"]}, ["body", "tags", 0]),
                             ({"tags": [f"t{i}" for i in range(21)]}, ["body", "tags"]),
                             ({"name": ""}, ["body", "name"]),
                             ({"name": "x" * 201}, ["body", "name"])]:
        r = svc.submit(iris["id"], **overrides)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == where, (overrides, r.text)


def test_a_filter_no_name_or_tag_could_hold_is_422_not_a_database_error(any_svc):
    """PostgreSQL refuses a NUL in any text it is sent: a name filter holding one was a 500 there
    (found by the schema fuzz). Filters take what names and tags take."""
    for query, where in [("name=a%00b", ["query", "name"]), ("name=%E2%80%AEevil", ["query", "name"]),
                         ("tag=v1&tag=a%00b", ["query", "tag", 1])]:
        r = any_svc.client.get(f"/v1/jobs?{query}", headers=any_svc.a)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == where, (query, r.text)
    assert "control character (U+0000)" in any_svc.client.get("/v1/jobs?name=a%00b", headers=any_svc.a).text
    job = any_svc.submit(any_svc.dataset(iris_like(), "iris.csv")["id"], name="mlp").json()
    assert ids(any_svc, "name=%20mlp%20") == {job["id"]}     # spaces around a name are trimmed, as at submit
