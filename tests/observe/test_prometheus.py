"""The Prometheus collector: after a scripted workload on two databases, the exposition parses
and holds every metric family with sane values, labelled by database and free of secrets."""

from __future__ import annotations

import dataclasses
import urllib.request
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dalkit import Database, DomainEvent, UnitOfWork
from dalkit.errors import ConfigurationError
from dalkit.observe import NPlusOneError, install
from dalkit.observe.prometheus import register, start_http_server
from dalkit.outbox.messages import event_type

from .models import Base, Posts, seed_rows


@pytest.fixture
def databases(tmp_path: object, postgres_database_url: str) -> Iterator[list[Database]]:
    pg = sa.engine.make_url(postgres_database_url).set(drivername="postgresql+psycopg")
    found = [
        Database(f"sqlite:///{tmp_path}/metrics.db"),
        Database(pg.render_as_string(hide_password=False)),
    ]
    try:
        yield found
    finally:
        for database in found:
            database.dispose()


def _workload(db: Database) -> None:
    db.create_all(Base.metadata)
    with db.session() as session:
        session.add_all(seed_rows())
    with db.transaction() as session:
        session.execute(sa.text("SELECT 1")).all()
    with pytest.raises(ZeroDivisionError), db.transaction():
        _ = 1 / 0
    with pytest.raises(NPlusOneError), db.session() as session:
        for post in Posts(session).list():
            _ = post.author


@pytest.mark.slow
def test_the_exposition_parses_and_holds_every_family(databases: list[Database]) -> None:
    registry = CollectorRegistry()
    for db, name in zip(databases, ("main", "reports"), strict=True):
        install(db.engine, {"nplusone": "raise", "slow_query_ms": 0})
        register(db, name, registry=registry)
        _workload(db)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "dalkit_pool_size",
        "dalkit_pool_checked_out",
        "dalkit_pool_requests",
        "dalkit_pool_wait_seconds",
        "dalkit_pool_timeouts",
        "dalkit_pool_hold_seconds",
        "dalkit_pool_max_hold_seconds",
        "dalkit_transactions",
        "dalkit_transaction_rollbacks",
        "dalkit_transaction_retries",
        "dalkit_transaction_duration_seconds",
        "dalkit_query_duration_seconds",
        "dalkit_slow_queries",
        "dalkit_nplusone_detections",
    ):
        assert name in families, name
    assert "dalkit_pool_wait_seconds_total" in text

    def value(family: str, sample: str, **labels: str) -> float:
        return next(
            s.value
            for s in families[family].samples
            if s.name == sample and labels.items() <= s.labels.items()
        )

    for database in ("main", "reports"):
        assert value("dalkit_pool_requests", "dalkit_pool_requests_total", database=database) >= 4
        assert (
            value(
                "dalkit_nplusone_detections", "dalkit_nplusone_detections_total", database=database
            )
            == 1
        )
        committed = value(
            "dalkit_transactions",
            "dalkit_transactions_total",
            database=database,
            outcome="committed",
        )
        failed = value(
            "dalkit_transactions", "dalkit_transactions_total", database=database, outcome="failed"
        )
        assert committed >= 1
        assert failed >= 1
        selects = value(
            "dalkit_query_duration_seconds",
            "dalkit_query_duration_seconds_count",
            database=database,
            operation="SELECT",
        )
        assert selects >= 3
        assert (
            value(
                "dalkit_query_duration_seconds",
                "dalkit_query_duration_seconds_bucket",
                database=database,
                operation="SELECT",
                le="+Inf",
            )
            == selects
        )
        assert (
            value("dalkit_slow_queries", "dalkit_slow_queries_total", database=database) >= selects
        )
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert not any("sqlite" in v or "postgresql" in v or "127.0.0.1" in v for v in labels)
    assert "dalkit" not in {s.labels.get("database") for f in families.values() for s in f.samples}


def test_reconfiguring_the_observer_keeps_its_counters(tmp_path: object) -> None:
    registry = CollectorRegistry()
    db = Database(f"sqlite:///{tmp_path}/kept.db")
    try:
        register(db, "main", registry=registry)
        install(db.engine, {"nplusone": "raise", "slow_query_ms": 0})
        _workload(db)

        def counted() -> tuple[float, float]:
            samples = {
                s.name: s.value
                for f in text_string_to_metric_families(generate_latest(registry).decode())
                for s in f.samples
            }
            return samples["dalkit_slow_queries_total"], samples["dalkit_nplusone_detections_total"]

        slow, detections = counted()
        assert slow > 0
        assert detections == 1
        install(db.engine, {"nplusone": "warn", "slow_query_ms": 100})  # as at a deploy
        assert counted() == (slow, detections)  # a counter that fell would read as a reset
    finally:
        db.dispose()


def test_two_databases_cannot_share_a_name(tmp_path: object) -> None:
    registry = CollectorRegistry()
    first, second = Database(f"sqlite:///{tmp_path}/a.db"), Database(f"sqlite:///{tmp_path}/b.db")
    try:
        register(first, "app", registry=registry)
        with pytest.raises(ConfigurationError, match="already collected as 'app'"):
            register(second, "app", registry=registry)
        register(second, registry=registry)  # named after its file: b.db
        names = {
            s.labels["database"]
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in f.samples
        }
        assert names == {"app", "b.db"}
    finally:
        first.dispose()
        second.dispose()


def test_metrics_are_served_over_http(tmp_path: object) -> None:
    registry = CollectorRegistry()
    db = Database(f"sqlite:///{tmp_path}/served.db")
    register(db, "served", registry=registry)
    server, thread = start_http_server(0, registry=registry)
    try:
        db.sql("SELECT 1 AS one")
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert 'dalkit_query_duration_seconds_count{database="served",operation="SELECT"}' in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        db.dispose()


@event_type("observe_test.post_published", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class PostPublished(DomainEvent):
    post_id: int


def test_the_outbox_backlog_is_collected_when_asked(tmp_path: object) -> None:
    registry = CollectorRegistry()
    db = Database(f"sqlite:///{tmp_path}/outbox.db")
    try:
        db.create_all()
        with UnitOfWork(db, outbox=True) as uow:
            for post_id in (1, 2):
                uow.publish(PostPublished(post_id=post_id))
        register(db, "app", registry=registry, outbox=True)
        families = {
            f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
    finally:
        db.dispose()
    (pending,) = families["dalkit_outbox_pending_messages"].samples
    assert (pending.labels, pending.value) == ({"database": "app"}, 2.0)
    (failing,) = families["dalkit_outbox_failing_messages"].samples
    assert failing.value == 0
    (age,) = families["dalkit_outbox_oldest_pending_age_seconds"].samples
    assert 0 <= age.value < 60


def test_a_missing_outbox_leaves_the_rest_of_the_scrape_intact(tmp_path: object) -> None:
    registry = CollectorRegistry()
    db = Database(f"sqlite:///{tmp_path}/no_outbox.db")
    try:
        register(db, "bare", registry=registry, outbox=True)
        names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    finally:
        db.dispose()
    assert "dalkit_pool_size" in names
    assert "dalkit_outbox_pending_messages" not in names
