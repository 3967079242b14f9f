"""Migrations are the only way the schema is made: the schema they make is exactly the tables'."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from core.db import upgrade
from core.tables import Base


def drift(url: str) -> list:
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()


def test_sqlite_schema_from_migrations_matches_the_tables(tmp_path):
    assert drift(f"sqlite:///{tmp_path / 'm.sqlite'}") == []


@pytest.mark.postgres
def test_postgres_schema_from_migrations_matches_the_tables(pg_server):
    assert drift(pg_server.create_database()) == []
