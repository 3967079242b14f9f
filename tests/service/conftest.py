"""A fresh service per test: its own data dir, a SQLite schema made by the migrations, two API keys."""
from __future__ import annotations

import io
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.db import get_engine, get_sessionmaker, upgrade
from core.keys import create_key
from core.settings import Settings


@dataclass
class Service:
    settings: Settings
    client: TestClient
    key_a: str
    key_b: str
    key_a_id: str

    @property
    def a(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_a}"}

    @property
    def b(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key_b}"}

    def session(self):
        return get_sessionmaker(self.settings.database_url)()

    def upload(self, content: bytes, filename: str = "data.csv", headers: dict | None = None, **fields):
        return self.client.post("/v1/datasets", headers=headers or self.a,
                                files={"file": (filename, content)},
                                data={k: v for k, v in fields.items() if v is not None})

    def dataset(self, content: bytes, filename: str = "data.csv", **fields) -> dict[str, Any]:
        r = self.upload(content, filename, **fields)
        assert r.status_code == 201, r.text
        return r.json()

    def submit(self, dataset_id: str, headers: dict | None = None, **overrides):
        body = {"dataset_id": dataset_id,
                "model": {"layers": [{"type": "linear", "out_features": 8}, {"type": "relu"},
                                     {"type": "linear", "out_features": 3}]},
                "loss": "cross_entropy", "optimizer": {"type": "adam", "lr": 0.01}, "epochs": 2,
                "batch_size": 4, "validation_split": 0.25, "seed": 0, "device": "cpu"}
        body.update(overrides)
        return self.client.post("/v1/jobs", headers=headers or self.a, json=body)


def finish(svc: Service, job: dict, input_shape, seed: int = 7):
    """What the worker does on success: a weights file (torch.nn names) + the row marked succeeded."""
    import safetensors.torch

    from core import artifacts
    from core.tables import Job, utcnow
    from engine import Model

    model = Model.from_spec(job["request"]["model"], tuple(input_shape), seed=seed)
    relpath = artifacts.weights_relpath(job["id"])
    artifacts.write_atomic(artifacts.resolve(svc.settings, relpath), safetensors.torch.save(model.state_dict()))
    with svc.session() as s:
        row = s.get(Job, job["id"])
        row.status, row.weights_path, row.finished_at = "succeeded", relpath, utcnow()
        s.commit()
    return model


def no_thread_path(*args, **kwargs):
    """api.routes.jobs.run_in_threadpool, where only core.poll_reads may answer a status poll."""
    raise AssertionError("the status poll took SQLAlchemy's thread path, not the pool")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """The schema as the migrations make it, once per session; each service starts from a copy."""
    path = tmp_path_factory.mktemp("template") / "chainrule.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


def make_service(tmp_path, template: Path | None = None, **limits) -> Service:
    settings = Settings(data_dir=tmp_path / "data", **limits)
    if template is not None and settings.database_url == f"sqlite:///{settings.data_dir / 'chainrule.sqlite'}":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, settings.data_dir / "chainrule.sqlite")
    upgrade(settings.database_url)  # a no-op at head on the copy; the full migration without one
    with get_sessionmaker(settings.database_url)() as session:
        row_a, key_a = create_key(session, "alice", settings)
        _, key_b = create_key(session, "bob", settings)
    client = TestClient(create_app(settings))
    return Service(settings, client, key_a, key_b, row_a.id)


@pytest.fixture
def service_factory(tmp_path, migrated_db) -> Callable[..., Service]:
    made: list[Service] = []

    def factory(**limits) -> Service:
        svc = make_service(tmp_path / f"svc{len(made)}", migrated_db, **limits)
        made.append(svc)
        return svc

    yield factory
    for svc in made:
        svc.client.close()
        get_engine(svc.settings.database_url).dispose()


@pytest.fixture
def svc(service_factory) -> Service:
    return service_factory()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_svc(request, service_factory) -> Service:
    """The same service on SQLite, then on PostgreSQL (a fresh database on the session's server)."""
    if request.param == "sqlite":
        return service_factory()
    return service_factory(database_url=request.getfixturevalue("pg_server").create_database())


def csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def iris_like(n: int = 12) -> bytes:
    """4 numeric features, a text label with three classes."""
    rng = np.random.default_rng(0)
    names = ["virginica", "setosa", "versicolor"]
    rows = [[*np.round(rng.normal(size=4), 3), names[i % 3]] for i in range(n)]
    return csv_bytes(["a", "b", "c", "d", "species"], rows)


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture
def iris(svc) -> dict[str, Any]:
    return svc.dataset(iris_like(), "iris.csv")


def at_once(action: Callable[[], Any], n: int) -> None:
    """`action` from n threads released together (processes racing on one row); re-raises the
    first error any of them hit."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def one():
        try:
            barrier.wait()
            action()
        except BaseException as exc:
            errors.append(exc)
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
