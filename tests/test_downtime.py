"""Downtime fairness (rule 8): how a starting server finds the platform's outage from the
heartbeats in the store (server/work/outage.py), on SQLite and PostgreSQL.

The end-to-end case (a SIGKILL inside the decryption window, the window extended, the bid not
decrypted withdrawn) is tests/test_crash.py; the rule itself is in tests/test_opening_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from server.clock import ManualClock
from server.store import Store
from server.work.outage import LIVE_SECONDS, find_outage

T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)


@dataclass
class _Settings:
    instance: str
    redis_url: str | None


@dataclass
class _Process:
    """What find_outage reads of a starting process: its store, clock and settings."""

    store: Store
    clock: ManualClock
    settings: _Settings


def starting(store: Store, at: datetime, redis_url: str | None = None) -> _Process:
    return _Process(store, ManualClock(at), _Settings("starting", redis_url))


async def test_rule_08_a_new_installation_had_no_outage(store: Store) -> None:
    assert await find_outage(starting(store, T0)) is None


async def test_rule_08_outage_runs_from_the_last_heartbeat_of_a_killed_process(
    store: Store,
) -> None:
    await store.beat("old", T0)
    await store.beat("old", T0 + timedelta(seconds=2))
    restart = T0 + timedelta(minutes=3)
    found = await find_outage(starting(store, restart))
    assert found == (T0 + timedelta(seconds=2), restart)


async def test_rule_08_outage_runs_from_a_clean_stop(store: Store) -> None:
    await store.beat("old", T0)
    await store.stopped("old", T0 + timedelta(seconds=1))
    restart = T0 + timedelta(hours=1)
    assert await find_outage(starting(store, restart)) == (
        T0 + timedelta(seconds=1),
        restart,
    )


async def test_rule_08_the_latest_sign_of_life_of_any_process_starts_the_outage(
    store: Store,
) -> None:
    await store.beat("one", T0)
    await store.stopped("two", T0)  # no row yet: nothing is written
    await store.beat("two", T0 + timedelta(seconds=30))
    restart = T0 + timedelta(minutes=1)
    assert await find_outage(starting(store, restart)) == (
        T0 + timedelta(seconds=30),
        restart,
    )
    assert [r[0] for r in sorted(await store.heartbeats())] == ["one", "two"]


async def test_rule_08_a_live_peer_behind_redis_means_no_outage(store: Store) -> None:
    redis = "redis://127.0.0.1:6379/0"
    now = T0 + timedelta(minutes=1)
    await store.beat("peer", now - timedelta(seconds=LIVE_SECONDS / 2))
    assert await find_outage(starting(store, now, redis)) is None
    # Its last beat too old: the peer is gone, the platform was down since that beat.
    later = now + timedelta(seconds=LIVE_SECONDS + 1)
    assert await find_outage(starting(store, later, redis)) == (
        now - timedelta(seconds=LIVE_SECONDS / 2),
        later,
    )
    # A peer that stopped cleanly is not serving, however recent its stop.
    await store.stopped("peer", now)
    assert await find_outage(starting(store, now + timedelta(seconds=1), redis)) == (
        now,
        now + timedelta(seconds=1),
    )


async def test_rule_08_without_redis_a_recent_heartbeat_is_a_dead_process(store: Store) -> None:
    """One process serves (the embedded default): whatever beat before this start is dead."""
    await store.beat("old", T0)
    restart = T0 + timedelta(seconds=1)
    assert await find_outage(starting(store, restart)) == (T0, restart)


async def test_forgotten_heartbeats_are_only_the_old_ones(store: Store) -> None:
    await store.beat("gone", T0)
    await store.beat("recent", T0 + timedelta(days=2))
    await store.forget_heartbeats(T0 + timedelta(days=1))
    assert [r[0] for r in await store.heartbeats()] == ["recent"]
