"""The OpenAPI document says what the service does (issue 20): 405s list every allowed method,
integers are integers (3.0 is refused where the schema says integer)."""
from __future__ import annotations

import pytest

from conftest import finish, iris_like


def test_a_405_allows_every_method_of_the_path(svc, iris):
    job = svc.submit(iris["id"]).json()
    r = svc.client.put(f"/v1/jobs/{job['id']}", headers=svc.a)
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    assert "allowed: DELETE, GET" in r.json()["detail"]
    r = svc.client.delete("/v1/jobs", headers=svc.a)
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    schema = svc.client.get("/openapi.json").json()
    assert sorted(m.upper() for m in schema["paths"]["/v1/jobs"]) == ["GET", "POST"]


@pytest.mark.parametrize("override, loc", [({"epochs": 3.0}, ["body", "epochs"]),
                                           ({"batch_size": 4.0}, ["body", "batch_size"]),
                                           ({"model": {"layers": [{"type": "linear", "out_features": 3.0}]}},
                                            ["body", "model", "layers", 0, "linear", "out_features"])])
def test_a_float_where_an_integer_is_meant_is_422(svc, iris, override, loc):
    r = svc.submit(iris["id"], **override)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc and "without a decimal point" in r.json()["detail"][0]["msg"]
    assert svc.submit(iris["id"], **{k: v for k, v in {"epochs": 3, "batch_size": 4}.items()
                                     if k in override}).status_code == 202


@pytest.mark.parametrize("query", ["limit=3.0", "limit=3e0", "offset=0.0"])
def test_a_float_in_an_integer_query_is_422(svc, query):
    r = svc.client.get(f"/v1/jobs?{query}", headers=svc.a)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "query", r.text
    assert svc.client.get("/v1/jobs?limit=3&offset=0", headers=svc.a).status_code == 200


def _error_examples(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    yield f"{method.upper()} {path} {status}", int(status), response


def test_every_error_example_is_a_body_of_its_own_status(svc, iris):
    from api.schemas import ErrorBody

    schema = svc.client.get("/openapi.json").json()
    examples = {}
    for where, status, response in _error_examples(schema):
        example = response["content"]["application/json"]["example"]
        ErrorBody.model_validate(example)
        assert isinstance(example["detail"], list) == (status == 422), where
        examples.setdefault(status, set()).add(str(example))
    assert len({next(iter(v)) for s, v in examples.items() if s != 404}) == len(examples) - 1   # one per status
    submit = schema["paths"]["/v1/jobs"]["post"]["responses"]
    # the examples are what the service answers, to the byte
    assert svc.client.post("/v1/jobs", json={}).json() == submit["401"]["content"]["application/json"]["example"]
    assert svc.submit(iris["id"], epochs=0).json() == submit["422"]["content"]["application/json"]["example"]
    assert "dataset" in submit["404"]["content"]["application/json"]["example"]["detail"]


def test_the_swagger_job_example_runs_as_is_without_a_fixed_name(svc, iris):
    schema = svc.client.get("/openapi.json").json()
    example = schema["components"]["schemas"]["JobSubmit"]["examples"][0]
    assert "name" not in example
    first = svc.submit(iris["id"], **{k: v for k, v in example.items() if k not in ("dataset_id", "device")})
    assert first.status_code == 202, first.text
    assert first.json()["name"] is None


def test_run_time_bounds_are_in_the_schema_and_enforced_at_them(service_factory):
    svc = service_factory(plot_max_px=900, landscape_max_points=31, gradcheck_max_batch_size=8)
    schema = svc.client.get("/openapi.json").json()
    width = next(p for p in schema["paths"]["/v1/jobs/{job_id}/plots/{kind}.png"]["get"]["parameters"]
                 if p["name"] == "width")["schema"]
    assert (width["minimum"], width["maximum"]) == (svc.settings.plot_min_px, 900)
    components = schema["components"]["schemas"]
    assert components["LandscapeRequest"]["properties"]["points"]["maximum"] == 31
    assert components["GradcheckRequest"]["properties"]["batch_size"]["maximum"] == 8
    dataset = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(dataset["id"]).json()
    finish(svc, job, dataset["input_shape"])
    job_id = job["id"]
    r = svc.client.get(f"/v1/jobs/{job_id}/plots/loss.png?width=901", headers=svc.a)
    assert r.status_code == 422 and "900" in r.text
    assert svc.client.get(f"/v1/jobs/{job_id}/plots/loss.png?width=900.0", headers=svc.a).status_code == 422
    r = svc.client.post(f"/v1/jobs/{job_id}/landscape", headers=svc.a, json={"points": 32})
    assert r.status_code == 422 and "31" in r.text
    r = svc.client.post("/v1/gradcheck", headers=svc.a, json={
        "model": {"layers": [{"type": "linear", "out_features": 2}]}, "loss": "mse", "input_shape": [3],
        "batch_size": 9})
    assert r.status_code == 422 and "8" in r.text


def test_one_of_constraints_and_the_stop_on_enum_are_in_the_schema(svc, iris):
    from core.sweeps.spec import FORMS
    from engine.spec.diagnostics import RULES

    components = svc.client.get("/openapi.json").json()["components"]["schemas"]
    assert [b["required"] for b in components["GradcheckRequest"]["oneOf"]] == [["input_shape"], ["dataset_id"]]
    assert [b["required"] for b in components["Parameter"]["oneOf"]] == [[f] for f in FORMS]
    assert components["Diagnostics"]["properties"]["stop_on"]["items"]["enum"] == list(RULES)
    both = svc.client.post("/v1/gradcheck", headers=svc.a, json={
        "model": {"layers": [{"type": "linear", "out_features": 2}]}, "loss": "mse", "input_shape": [4],
        "dataset_id": iris["id"]})
    assert both.status_code == 422 and "exactly one of input_shape" in both.text
    r = svc.submit(iris["id"], diagnostics={"stop_on": ["no_such_rule"]})
    assert r.status_code == 422 and "no_such_rule" in r.text


def test_the_events_stream_is_documented_as_text_event_stream_with_each_event(svc):
    schema = svc.client.get("/openapi.json").json()
    ok = schema["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(ok) == ["text/event-stream"]
    events = ok["text/event-stream"]["itemSchema"]["oneOf"]
    assert [e["properties"]["event"]["const"] for e in events] == ["status", "epoch", "progress", "finding"]
    for event in events:
        ref = event["properties"]["data"]["contentSchema"]["$ref"].rsplit("/", 1)[1]
        assert ref in schema["components"]["schemas"], ref
    assert "epoch" in schema["components"]["schemas"]["EpochData"]["properties"]


def test_event_streams_are_capped_per_process_across_keys(service_factory):
    svc = service_factory(max_event_streams=1, max_event_streams_per_key=5, events_poll_interval_s=0.05)
    job = svc.submit(svc.dataset(iris_like(), "iris.csv")["id"]).json()
    with svc.client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=svc.a) as first:
        assert first.status_code == 200
        second = svc.client.get(f"/v1/jobs/{job['id']}/events", headers=svc.a)
        assert second.status_code == 503 and "busy" in second.json()["detail"] and second.headers["retry-after"]
        svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a)
        assert any("cancelled" in line for line in first.iter_lines())
    with svc.client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=svc.a) as again:
        assert again.status_code == 200          # the slot came back


def test_a_405_on_a_static_file_allows_what_static_files_serve(svc):
    r = svc.client.post("/static/swagger-ui/swagger-ui.css")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
