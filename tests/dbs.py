"""Database fixtures: every store test runs on SQLite and on PostgreSQL (a fresh database each)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from server.store import Store, open_store

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


@pytest_asyncio.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of an empty database: a SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        return
    async for url in _pg_database():
        yield url


@pytest_asyncio.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An open, migrated store on ``store_url``; blobs under ``tmp_path / "blobs"``."""
    opened = await open_store(store_url, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
