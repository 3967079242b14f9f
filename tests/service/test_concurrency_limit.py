"""The concurrent-jobs limit holds under parallel submits (issue 8, point 2): 20 submits of one key at
once, limit 2, on SQLite and on PostgreSQL, round after round: never more than 2 accepted."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from core.lifecycle import ACTIVE
from core.tables import Job

from conftest import iris_like

PARALLEL = 20
ROUNDS = 4


def _active(svc) -> int:
    with svc.session() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE)))


def test_twenty_parallel_submits_accept_exactly_the_limit(any_svc):
    svc = any_svc
    svc.settings.max_concurrent_jobs = 2    # the app holds this very Settings object
    ds = svc.dataset(iris_like(), "iris.csv")
    with ThreadPoolExecutor(PARALLEL) as pool:
        for round_ in range(ROUNDS):
            statuses = sorted(pool.map(lambda _: svc.submit(ds["id"]).status_code, range(PARALLEL)))
            assert statuses == [202] * 2 + [429] * (PARALLEL - 2), (round_, statuses)
            assert _active(svc) == 2
            for job in svc.client.get("/v1/jobs?status=queued", headers=svc.a).json()["items"]:
                assert svc.client.post(f"/v1/jobs/{job['id']}/cancel", headers=svc.a).status_code == 200
