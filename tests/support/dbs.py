"""Test databases: a fresh PostgreSQL database per test (the ``store_url`` fixture's second half)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_dsn(url: str) -> str:
    """A DSN asyncpg understands (no ``+driver`` part)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _pg_database() -> AsyncIterator[str]:
    base = os.environ.get("BIDBRIDGE_TEST_PG", PG_DEFAULT)
    try:
        admin = await asyncpg.connect(_pg_dsn(base), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL not reachable at {base}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message)  # under CI both databases are required
        pytest.skip(message)
    name = f"bb_{uuid.uuid4().hex}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield make_url(_pg_dsn(base)).set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(_pg_dsn(base), timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
