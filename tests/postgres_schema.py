"""A schema of its own in the integration tests' PostgreSQL, dropped afterwards (shared by the tests that
need the store on PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES = os.environ.get("SHILLGUARD_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """The URL of a new schema (skips, naming the reason, where psycopg or the server is missing)."""
    psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg[binary]")
    try:
        connection = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES}: {error}")
    schema = f"sg_test_{uuid.uuid4().hex[:8]}"
    connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")
        connection.close()
