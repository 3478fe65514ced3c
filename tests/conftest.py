"""Shared fixtures, thin wrappers over tests/support: the test PKI, databases, SoftHSM tokens,
a real opening hall and Chromium."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from server.store import Store, open_store
from tests.support.dbs import _pg_database
from tests.support.hall import Hall, start_hall, stop_hall
from tests.support.pages import Browsing, chromium
from tests.support.pki import PemFiles, Pki, make_pki, write_pair
from tests.support.softhsm import SoftHSMToken, softhsm_available, softhsm_setup


@pytest.fixture(scope="session")
def pki() -> Pki:
    return make_pki()


@pytest.fixture
def rsa_files(pki: Pki, tmp_path: Path) -> PemFiles:
    """Bidder a's RSA pair, the roots and a trust folder, written out for CLI tests."""
    return write_pair(tmp_path / "rsa", pki, pki.bidder_rsa)


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


@pytest.fixture
def softhsm_token() -> Iterator[SoftHSMToken]:
    """A fresh SoftHSM token for one test.

    Without SoftHSM2 the test skips with a visible reason, except under CI (``CI`` set), where
    ``make test`` has installed it and a missing module is a failure.
    """
    if not softhsm_available():
        if os.environ.get("CI"):
            pytest.fail("SoftHSM2 is missing under CI: `make test` should have installed softhsm2")
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2)")
    with softhsm_setup() as token:
        yield token


@pytest_asyncio.fixture
async def hall(pki: Pki, tmp_path: Path, store_url: str | None) -> AsyncIterator[Hall]:
    """A real opening hall on a loopback port, on ``store_url`` (each database in turn; a module
    that overrides ``store_url`` with None runs on the server's default store only)."""
    h = await start_hall(pki, tmp_path, store_url)
    try:
        yield h
    finally:
        await stop_hall(h)


@pytest_asyncio.fixture
async def browsing() -> AsyncIterator[Browsing]:
    """Chromium with one context per party; the test fails on any uncaught page error."""
    async with chromium() as b:
        yield b
