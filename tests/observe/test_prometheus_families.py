"""The Prometheus families beyond pools and queries: transaction latency as a real histogram per
isolation level, the query cache's counters (memory and Redis) and the read replicas' health,
each checked in the parsed exposition after a scripted workload."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dalkit import AsyncDatabase, Database, RedisManager, Repository
from dalkit.cache import MemoryBackend, QueryCache, RedisBackend, install
from dalkit.errors import ConfigurationError
from dalkit.observe.prometheus import register
from dalkit.testing.replication import (  # noqa: F401 - fixtures
    Replication,
    current_lsn,
    replicated_database,
    replication,
)

from .models import Author, Base, seed_rows


def _scrape(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    (found,) = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    return found


@pytest.fixture
def sqlite_db(tmp_path: object) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path}/families.db")
    db.create_all(Base.metadata)
    try:
        yield db
    finally:
        db.dispose()


def test_transaction_latency_is_a_histogram_per_isolation_level(db: Database) -> None:
    registry = CollectorRegistry()
    register(db, "app", registry=registry)
    for _ in range(3):
        with db.transaction() as session:
            session.execute(sa.text("SELECT 1"))
    with db.transaction(isolation="SERIALIZABLE") as session:
        time.sleep(0.03)  # lands above the 25 ms bucket
    samples = _scrape(registry)["dalkit_transaction_duration_seconds"]
    assert {s.labels["isolation"] for s in samples} == {"DEFAULT", "SERIALIZABLE"}
    for isolation, calls in (("DEFAULT", 3), ("SERIALIZABLE", 1)):
        mine = [s for s in samples if s.labels["isolation"] == isolation]
        buckets = [s for s in mine if s.name.endswith("_bucket")]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts)  # cumulative
        assert buckets[-1].labels["le"] == "+Inf"
        count = _value(mine, "dalkit_transaction_duration_seconds_count")
        assert counts[-1] == count == calls
        assert _value(mine, "dalkit_transaction_duration_seconds_sum") > 0
    serializable = [s for s in samples if s.labels["isolation"] == "SERIALIZABLE"]
    assert _value(serializable, "dalkit_transaction_duration_seconds_bucket", le="0.025") == 0
    assert _value(serializable, "dalkit_transaction_duration_seconds_bucket", le="10.0") == 1
    # no percentile gauges any more: one family, of histogram samples only
    assert all(not s.labels.get("quantile") for s in samples)


async def test_an_async_database_has_the_histogram_and_refuses_outbox_metrics(
    async_db: AsyncDatabase,
) -> None:
    registry = CollectorRegistry()
    register(async_db, "app", registry=registry)
    async with async_db.transaction() as session:
        await session.execute(sa.text("SELECT 1"))
    samples = _scrape(registry)["dalkit_transaction_duration_seconds"]
    assert _value(samples, "dalkit_transaction_duration_seconds_count", isolation="DEFAULT") == 1
    with pytest.raises(ConfigurationError, match="sync Database"):
        register(async_db, "outbox", registry=registry, outbox=True)


class CachedAuthors(Repository[Author]):
    cache_ttl = 60


def _cache_workload(db: Database) -> None:
    with db.session() as session:
        session.add_all(seed_rows())
    for _ in range(3):  # one miss and its set, then two hits
        with db.session() as session:
            assert len(CachedAuthors(session).list(name__startswith="author")) == 5
    with db.session() as session:
        # update() reads the row first (a second miss and set), then writes: invalidated
        CachedAuthors(session).update(1, name="renamed")
        CachedAuthors(session).list()  # the transaction wrote the table: bypassed


def _assert_cache_families(families: dict[str, list[Sample]]) -> None:
    def counter(name: str) -> float:
        return _value(
            families[f"dalkit_cache_{name}"], f"dalkit_cache_{name}_total", database="app"
        )

    assert (counter("hits"), counter("misses"), counter("sets")) == (2, 2, 2)
    assert counter("invalidations") >= 1
    assert counter("bypasses") >= 1
    assert counter("errors") == 0
    ratio = _value(families["dalkit_cache_hit_ratio"], "dalkit_cache_hit_ratio", database="app")
    assert ratio == pytest.approx(0.5)


def test_cache_counters_and_hit_ratio_with_a_memory_cache(sqlite_db: Database) -> None:
    install(sqlite_db, QueryCache(MemoryBackend()))
    registry = CollectorRegistry()
    register(sqlite_db, "app", registry=registry)
    _cache_workload(sqlite_db)
    _assert_cache_families(_scrape(registry))


def test_cache_counters_with_a_redis_cache(sqlite_db: Database, redis_url: str) -> None:
    manager = RedisManager(redis_url)
    try:
        install(sqlite_db, QueryCache(RedisBackend(manager), database_id="families"))
        registry = CollectorRegistry()
        register(sqlite_db, "app", registry=registry)
        _cache_workload(sqlite_db)
        _assert_cache_families(_scrape(registry))
    finally:
        manager.close()


def test_a_database_without_cache_or_replicas_has_no_such_families(sqlite_db: Database) -> None:
    registry = CollectorRegistry()
    register(sqlite_db, "app", registry=registry)
    names = set(_scrape(registry))
    assert not any(n.startswith(("dalkit_cache_", "dalkit_replica_")) for n in names)


def _replica_samples(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    return {n: s for n, s in _scrape(registry).items() if n.startswith("dalkit_replica_")}


def _wait(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout}s"
        time.sleep(0.05)


def test_a_healthy_replica_weighted_zero_is_up_and_drained(postgres_url: str) -> None:
    # the primary's own server as the replica: not in recovery, so found healthy
    db = Database(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"),
        replicas=[postgres_url],
        replica_weights=[0],
        replica_monitor_interval_s=0.1,
    )
    try:
        registry = CollectorRegistry()
        register(db, "app", registry=registry)

        def probed() -> bool:
            with db.transaction(read_only=True) as session:  # the first starts the monitor
                session.execute(sa.text("SELECT 1"))
            (replica,) = db.get_stats()["replicas"]["replicas"].values()
            return bool(replica["state"] == "healthy")

        _wait(probed, 10)
        families = _replica_samples(registry)
        assert _value(families["dalkit_replica_up"], "dalkit_replica_up") == 1  # it answers
        # before, nothing said that it gets no reads
        assert _value(families["dalkit_replica_drained"], "dalkit_replica_drained") == 1
        assert _value(families["dalkit_replica_reads"], "dalkit_replica_reads_total") == 0
    finally:
        db.dispose()


@pytest.mark.slow
def test_replica_lag_health_and_routed_reads(
    replicated_database: tuple[str, str],  # noqa: F811 - the fixture imported above
    replication: Replication,  # noqa: F811
) -> None:
    primary, replica_url = replicated_database
    db = Database(
        primary.replace("postgresql://", "postgresql+psycopg://"),
        replicas=[replica_url],
        max_replica_lag_s=0.5,
        replica_monitor_interval_s=0.1,
    )
    try:
        # as another process would: create_all binds the reads of its own context to the primary
        contextvars.copy_context().run(db.create_all, Base.metadata)
        replication.replica.wait_for(current_lsn(replication.primary.url))
        registry = CollectorRegistry()
        register(db, "app", registry=registry)
        for _ in range(3):  # the first read starts the replica monitor
            with db.transaction(read_only=True) as session:
                session.execute(sa.text("SELECT 1"))
        _wait(lambda: db.get_stats()["replicas"]["replicas"].popitem()[1]["state"] == "healthy", 10)
        families = _replica_samples(registry)
        (name,) = {s.labels["replica"] for s in families["dalkit_replica_up"]}
        host, port = name.rsplit(":", 1)
        assert host == sa.engine.make_url(replica_url).host
        assert port.isdigit()
        assert _value(families["dalkit_replica_up"], "dalkit_replica_up") == 1
        assert _value(families["dalkit_replica_reads"], "dalkit_replica_reads_total") == 3
        assert 0 <= _value(families["dalkit_replica_lag_seconds"], "dalkit_replica_lag_seconds") < 1
        states = families["dalkit_replica_state"]
        assert _value(states, "dalkit_replica_state", state="healthy") == 1
        assert sum(s.value for s in states) == 1

        replication.replica.pause_replay()
        try:
            with db.transaction() as session:
                session.add(Author(name="written while paused"))
            _wait(
                lambda: (
                    _value(_replica_samples(registry)["dalkit_replica_up"], "dalkit_replica_up")
                    == 0
                ),
                15,
            )
            families = _replica_samples(registry)
            assert (
                _value(families["dalkit_replica_state"], "dalkit_replica_state", state="lagging")
                == 1
            )
            assert (
                _value(families["dalkit_replica_lag_seconds"], "dalkit_replica_lag_seconds") > 0.5
            )
            assert (
                _value(families["dalkit_replica_ejections"], "dalkit_replica_ejections_total") >= 1
            )
        finally:
            replication.replica.resume_replay()
        text = generate_latest(registry).decode()
        assert "postgresql" not in text
        assert "@" not in text
    finally:
        db.dispose()
