"""Swagger UI's forms work as they are, numbers are numbers, and the task is inferred honestly."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import csv_bytes, iris_like


def swagger_initial_value(prop: dict):
    """What Swagger UI 5 puts in a form field before the user types (its json-schema-2020-12
    samples: the first of `examples`, else `default`, else `example`, else a generated sample:
    an enum's first value, "string" for a string)."""
    if prop.get("examples"):
        return prop["examples"][0]
    for key in ("default", "example"):
        if key in prop:
            return prop[key]
    if prop.get("enum"):
        return prop["enum"][0]
    return {"string": "string", "integer": 0, "number": 0, "boolean": True}.get(prop.get("type"))


def test_the_upload_form_executes_as_it_is(svc):
    schema = svc.client.get("/openapi.json").json()
    form = schema["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    filled = {name: swagger_initial_value(prop) for name, prop in form["properties"].items() if name != "file"}
    assert filled == {"name": "", "target": "", "task": "infer", "kind": "infer", "tokenizer": "byte",
                      "text_column": "", "max_length": ""}
    # what Execute sends with only a file chosen: a dataset named after the file, the task inferred
    content = csv_bytes(["a", "b", "price"], [[i, i % 7, round(10 + 0.37 * i, 2)] for i in range(400)])
    dataset = svc.dataset(content, "houses.csv", **filled)
    assert dataset["name"] == "houses.csv" and dataset["target"] == "price"
    assert dataset["task"] == "regression" and dataset["task_inferred"] is True


def test_the_job_example_says_where_its_dataset_id_comes_from(svc):
    schema = svc.client.get("/openapi.json").json()
    body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    job = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert "POST /v1/datasets" in job["properties"]["dataset_id"]["description"]
    example = job["examples"][0]
    r = svc.client.post("/v1/jobs", headers=svc.a, json=example)     # as-is: the placeholder is no id
    assert r.status_code == 422 and "POST /v1/datasets" in r.json()["detail"][0]["msg"]
    iris = svc.dataset(iris_like(), "iris.csv")
    r = svc.client.post("/v1/jobs", headers=svc.a, json={**example, "dataset_id": iris["id"]})
    assert r.status_code == 202, r.text      # the example runs once the id is pasted


def test_the_job_schema_says_loss_and_optimizer_take_a_bare_name(svc):
    schema = svc.client.get("/openapi.json").json()["components"]["schemas"]["JobSubmit"]["properties"]
    for field, name in (("loss", "cross_entropy"), ("optimizer", "adam"), ("schedule", "cosine")):
        choices = schema[field]["anyOf"]
        assert {"type": "string"}.items() <= choices[0].items() and name in choices[0]["enum"], field
        assert "default" not in schema[field]          # a generator cannot build an object default


@pytest.mark.parametrize("optimizer, field", [
    ({"type": "adam", "lr": "0.01"}, "lr"),
    ({"type": "sgd", "lr": 0.1, "momentum": "0.9"}, "momentum"),
    ({"type": "adam", "betas": ["0.9", 0.999]}, "betas"),
    ({"type": "adam", "lr": True}, "lr"),
])
def test_hyperparameters_given_as_strings_are_refused_not_coerced(svc, iris, optimizer, field):
    r = svc.submit(iris["id"], optimizer=optimizer)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"][:2] == ["body", "optimizer"] and field in error["loc"]
    assert "number" in error["msg"]


def test_nan_and_infinity_hyperparameters_are_422_and_integers_stay_valid(svc, iris):
    body = ('{"dataset_id": "%s", "model": {"layers": [{"type": "linear", "out_features": 3}]}, '
            '"loss": "cross_entropy", "optimizer": {"type": "adam", "lr": %s}}')
    for literal in ("NaN", "Infinity", "-Infinity"):
        content = body % (iris["id"], literal)
        r = svc.client.post("/v1/jobs", headers={**svc.a, "Content-Type": "application/json"}, content=content)
        (error,) = r.json()["detail"]
        assert r.status_code == 422 and error["type"] == "json_invalid", (literal, r.text)
        assert "NaN and Infinity are not JSON numbers" in error["msg"] 
        assert error["loc"][0] == "body" and 0 <= error["loc"][1] - content.index(literal) <= 1   # at the literal
    r = svc.submit(iris["id"], optimizer={"type": "adam", "lr": 1}, validation_split=0)
    assert r.status_code == 202, r.text
    assert r.json()["request"]["optimizer"]["lr"] == 1.0


def test_a_continuous_target_is_regression_and_the_response_says_why(svc):
    rng = np.random.default_rng(0)
    rows = [[*np.round(rng.normal(size=3), 4), round(float(rng.normal() * 50 + 200), 2)] for _ in range(400)]
    d = svc.dataset(csv_bytes(["a", "b", "c", "price"], rows), "houses.csv")
    assert d["task"] == "regression" and d["task_inferred"] is True and d["n_outputs"] == 1
    assert "non-integer" in d["task_reason"] and "'price'" in d["task_reason"]
    assert svc.client.get(f"/v1/datasets/{d['id']}", headers=svc.a).json()["task_reason"] == d["task_reason"]


def test_many_distinct_integers_are_regression_unless_classification_is_asked_for(svc):
    rows = [[i, 1000 + (i * 37) % 120] for i in range(400)]          # 120 distinct integers
    d = svc.dataset(csv_bytes(["x", "count"], rows), "counts.csv")
    assert d["task"] == "regression" and "120 distinct integers" in d["task_reason"]
    d = svc.dataset(csv_bytes(["x", "count"], rows), "counts.csv", task="classification")
    assert d["task"] == "classification" and d["n_outputs"] == 120 and d["task_inferred"] is False
    assert "given" in d["task_reason"]


def test_inferred_classes_are_capped_by_a_setting(service_factory):
    svc = service_factory(max_inferred_classes=5)
    rows = [[i, f"kind{i % 8}"] for i in range(80)]                  # 8 text labels
    r = svc.upload(csv_bytes(["x", "kind"], rows), "kinds.csv")
    assert r.status_code == 422 and "task=classification" in r.json()["detail"][0]["msg"]
    assert svc.dataset(csv_bytes(["x", "kind"], rows), "kinds.csv", task="classification")["n_outputs"] == 8
    ints = [[i, i % 8] for i in range(80)]
    assert svc.dataset(csv_bytes(["x", "k"], ints), "k.csv")["task"] == "regression"
