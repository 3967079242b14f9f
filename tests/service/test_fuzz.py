"""A bounded schema-fuzzing run (schemathesis) against the embedded service and against PostgreSQL:
every operation, with valid and invalid data (hypothesis), as a key that owns a dataset and a
succeeded job so that ids sometimes hit real rows. No response is a 5xx, every status is one the
OpenAPI documents for its operation, with the documented content type and body schema.

CHAINRULE_FUZZ_EXAMPLES sets the examples per operation and mode (default 25: ~1,000 requests a
backend in CI); the closing line of each run prints the counts.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from conftest import finish, iris_like

EXAMPLES = int(os.environ.get("CHAINRULE_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
pytestmark = pytest.mark.timeout(600)


def _owned_ids(svc) -> dict[str, str]:
    ds = svc.dataset(iris_like(), "iris.csv")
    job = svc.submit(ds["id"]).json()
    finish(svc, job, ds["input_shape"])
    return {"dataset_id": ds["id"], "job_id": job["id"]}


def fuzz(svc) -> Counter:
    """Every operation x (positive, negative) x EXAMPLES; returns the count of each status."""
    ids, statuses = _owned_ids(svc), Counter()
    schema = schemathesis.openapi.from_asgi("/openapi.json", svc.client.app)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:
            turn = Counter()

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                                 suppress_health_check=list(HealthCheck))
            def run(case):
                turn["n"] += 1
                if turn["n"] % 2:                    # every other case: ids that exist
                    if case.path_parameters:
                        case.path_parameters = {**case.path_parameters,
                                                **{k: v for k, v in ids.items() if k in case.path_parameters}}
                    if isinstance(case.body, dict) and "dataset_id" in case.body:
                        case.body = {**case.body, "dataset_id": ids["dataset_id"]}
                response = case.call(headers=svc.a)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)
            try:
                run()
            except Unsatisfiable:      # an operation without inputs has no invalid data to send
                assert mode == GenerationMode.NEGATIVE, operation.label
    print(f"fuzz on {svc.settings.database_url.split(':')[0]}: {sum(statuses.values())} requests, "
          f"{sum(n for s, n in statuses.items() if s >= 500)} x 5xx, statuses {dict(sorted(statuses.items()))}")
    return statuses


def test_fuzz_the_embedded_service(service_factory):
    statuses = fuzz(service_factory(rate_limit_per_key="", rate_limit_per_address=""))
    assert not [s for s in statuses if s >= 500]


@pytest.mark.postgres
def test_fuzz_on_postgresql(service_factory, pg_server):
    statuses = fuzz(service_factory(database_url=pg_server.create_database(), rate_limit_per_key="",
                                    rate_limit_per_address=""))
    assert not [s for s in statuses if s >= 500]
