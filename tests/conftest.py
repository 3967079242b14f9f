"""Fixtures for the end-to-end tests (tests/e2e_support.py): real PostgreSQL and Redis servers,
started once per session on loopback, and `stack_factory` for chainrule deployments made of
real `chainrule api` / `chainrule worker` processes. The in-process API fixtures live in
tests/service/conftest.py."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# One intra-op thread for the tests' small tensors, here and in every process they start (the API,
# workers and CLI inherit the environment); set before anything imports torch or numpy. With more
# runnable processes than cores (two suites at once, a busy CI host) torch's pool waits at a barrier
# after every op: a 25-step float64 GPT test took 10-18 s on two threads and 0.3 s on one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).parent))

from e2e_support import PostgresServer, RedisServer, Stack  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _running(server_class):
    """A fixture's body: the server started, then stopped whatever happened."""
    server = server_class()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server():
    yield from _running(PostgresServer)


@pytest.fixture(scope="module")
def own_pg_server():
    """A PostgreSQL server of this module's own, which its tests may pause and resume."""
    yield from _running(PostgresServer)


@pytest.fixture(scope="session")
def redis_server():
    yield from _running(RedisServer)


@pytest.fixture(scope="module")
def own_redis_server():
    """A Redis server of this module's own, which its tests may pause and resume."""
    yield from _running(RedisServer)


@pytest.fixture
def stack_factory(request, tmp_path):
    """stack_factory(backend="sqlite"|"postgres", **settings) -> Stack; everything it started is
    stopped after the test, and its process logs are printed when the test failed."""
    made: list[Stack] = []

    def make(backend: str = "sqlite", **settings) -> Stack:
        database_url = broker_url = None
        if backend == "postgres":
            database_url = request.getfixturevalue("pg_server").create_database()
            broker_url = request.getfixturevalue("redis_server").new_url()
        elif backend != "sqlite":
            raise ValueError(f"backend must be sqlite or postgres, got {backend!r}")
        stack = Stack(tmp_path / f"stack{len(made)}", database_url=database_url, broker_url=broker_url,
                      **settings)
        made.append(stack)
        return stack

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in made:
        stack.close()
        if failed:
            print(stack.dump_logs())
