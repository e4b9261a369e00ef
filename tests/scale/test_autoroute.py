"""Database with a real streaming replica: the plain ORM reads of a default transaction (a
repository's, a cache miss's) go to the replica until the transaction writes."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from dalkit import Database, Repository
from dalkit.cache import MemoryBackend, QueryCache
from dalkit.engine.autoroute import read_on_replica
from dalkit.engine.replicas import parse_lsn
from dalkit.errors import ConfigurationError
from dalkit.testing.replication import Replication, current_lsn

from .helpers import wait_until
from .models import Base, Widget

INTERVAL = 0.2


class Widgets(Repository[Widget]):
    pass


class CachedWidgets(Repository[Widget]):
    cache_ttl = 60


def _database(urls: tuple[str, str], replication: Replication, **options: Any) -> Database:
    primary, replica = urls
    database = Database(
        primary.replace("postgresql://", "postgresql+psycopg://"),
        replicas=[replica],
        max_replica_lag_s=3600,  # read-your-writes alone decides: replay is paused on purpose
        replica_monitor_interval_s=INTERVAL,
        **options,
    )
    database.create_all(Base.metadata)
    replication.replica.wait_for(current_lsn(replication.primary.url))
    return database


@pytest.fixture
def db(replicated_database: tuple[str, str], replication: Replication) -> Iterator[Database]:
    database = _database(replicated_database, replication)
    try:
        yield database
    finally:
        database.dispose()


def _stats(db: Database) -> dict[str, Any]:
    stats: dict[str, Any] = db.get_stats()["replicas"]
    return stats


def _replica(db: Database) -> dict[str, Any]:
    replica: dict[str, Any] = next(iter(_stats(db)["replicas"].values()))
    return replica


def _write(db: Database, widget_id: int, name: str) -> None:
    """A write from another request (its own context): this context's reads need not see it."""

    def write() -> None:
        with db.transaction() as session:
            session.merge(Widget(id=widget_id, name=name))

    contextvars.Context().run(write)


def _paused_with(db: Database, replication: Replication, rows: dict[int, str]) -> None:
    """``rows`` written and replayed, the monitor has seen so, then replay paused."""
    for widget_id, name in rows.items():
        _write(db, widget_id, name)
    with db.connection() as connection:
        lsn = connection.exec_driver_sql("SELECT pg_current_wal_insert_lsn()::text").scalar_one()
    replication.replica.wait_for(lsn)
    with db.transaction(read_only=True) as session:  # starts the monitor
        session.execute(text("SELECT 1"))
    _seen_at(db, lsn)
    replication.replica.pause_replay()
    db.pop_stats()


def _seen_at(db: Database, lsn: str) -> None:
    """Until the monitor has admitted the replica at ``lsn`` or past it: a loaded machine may
    take many of its rounds (5 s were not always enough)."""
    wait_until(
        lambda: (
            _replica(db)["admitted"] and parse_lsn(_replica(db)["replay_lsn"]) >= parse_lsn(lsn)
        ),
        seen=lambda: _replica(db),
    )


def _replica_checked_out(db: Database) -> int:
    """The replica connections still out once the monitor has given back its own.

    The monitor thread borrows a replica connection for a moment every INTERVAL, so a count
    taken at any instant could include it; a connection a transaction leaked never comes back.
    """
    pool = db._replicas.replicas.replicas[0].engine.pool  # type: ignore[union-attr]
    assert isinstance(pool, QueuePool)
    # a probe stalled on a loaded machine holds its connection for longer than 5 intervals
    with contextlib.suppress(AssertionError):
        wait_until(lambda: pool.checkedout() == 0)
    checked_out: int = pool.checkedout()
    return checked_out


def test_a_default_transactions_repository_reads_go_to_the_replica(
    db: Database, replication: Replication
) -> None:
    _paused_with(db, replication, {1: "before the pause"})
    _write(db, 2, "after the pause")  # on the primary only
    with db.transaction() as session:
        widgets = Widgets(session)
        assert not read_on_replica(session)  # nothing decided yet
        first = widgets.get_or_none(1)
        second = widgets.get_or_none(2)
        count = widgets.count()
        assert read_on_replica(session)
    assert first is not None
    assert first.name == "before the pause"
    assert second is None  # the replica answered: it has not replayed the second write
    assert count == 1
    assert _replica(db)["reads"] == 1  # one transaction routed, for all three reads
    assert _stats(db)["default_transactions_routed"] == 1
    assert _stats(db)["primary_reads"] == 0
    assert _replica_checked_out(db) == 0  # COMMIT gave the replica connection back


def test_a_write_then_read_in_one_transaction_reads_its_own_write_on_the_primary(
    db: Database, replication: Replication
) -> None:
    _paused_with(db, replication, {1: "old"})
    _write(db, 2, "only on the primary")
    with db.transaction() as session:
        widgets = Widgets(session)
        loaded = widgets.get(1)  # on the replica
        assert loaded.name == "old"
        widgets.add(Widget(id=3, name="mine"))  # flushed to the primary
        session.execute(
            update(Widget).where(Widget.id == 1).values(name="renamed"),
            execution_options={"synchronize_session": False},  # the identity map is not told
        )
        assert widgets.get(3).name == "mine"
        assert [w.name for w in widgets.find(id=1)] == ["renamed"]  # not the replica's row
        assert loaded.name == "renamed"
        assert widgets.get_or_none(2) is not None  # the primary answers now
    assert _stats(db)["default_transactions_routed"] == 1
    assert _replica_checked_out(db) == 0


def test_a_write_then_read_across_transactions_never_reads_stale_rows(
    db: Database, replication: Replication
) -> None:
    _paused_with(db, replication, {})
    stale = 0
    for widget_id in range(1, 301):
        with db.transaction() as session:
            Widgets(session).add(Widget(id=widget_id, name=f"w{widget_id}"))
        with db.transaction() as session:
            stale += Widgets(session).get_or_none(widget_id) is None
    assert stale == 0
    assert _stats(db)["read_your_writes_on_primary"] == 300
    assert _stats(db)["default_transactions_routed"] == 0
    # the same read from a request that wrote nothing goes to the (paused) replica
    fresh = contextvars.Context()
    assert fresh.run(lambda: _get(db, 300)) is None
    assert _stats(db)["default_transactions_routed"] == 1


def _get(db: Database, widget_id: int) -> Widget | None:
    with db.transaction() as session:
        return Widgets(session).get_or_none(widget_id)


def test_a_locking_read_text_statement_or_raw_connection_keeps_the_rest_on_the_primary(
    db: Database, replication: Replication
) -> None:
    _paused_with(db, replication, {})
    _write(db, 1, "only on the primary")
    with db.transaction() as session:
        locked = session.execute(select(Widget).where(Widget.id == 1).with_for_update())
        assert locked.scalar_one().name == "only on the primary"
        assert Widgets(session).get_or_none(1) is not None  # after a lock: the primary
    with db.transaction() as session:
        assert session.execute(text("SELECT pg_is_in_recovery()")).scalar_one() is False
        assert Widgets(session).get_or_none(1) is not None
    with db.transaction() as session:  # raw SQL, COPY and bulk loads go through connection()
        session.connection().exec_driver_sql("SELECT 1")
        assert Widgets(session).get_or_none(1) is not None
        assert not read_on_replica(session)
    assert _stats(db)["default_transactions_routed"] == 0

    def read_only() -> bool:
        with db.transaction(read_only=True) as session:  # routed whole
            return read_on_replica(session)

    # in a context of its own: the locking read above counts as a write for read-your-writes
    assert contextvars.Context().run(read_only)


def test_a_cached_read_miss_is_stored_only_from_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    """A lagging replica's result is never stored under tokens that a later commit set: a
    default transaction's miss reads the primary; a read-only one reads the replica, unstored."""
    db = _database(replicated_database, replication, cache=QueryCache(MemoryBackend()))
    try:
        _paused_with(db, replication, {1: "old", 2: "old"})
        _write(db, 1, "new")  # committed, tokens bumped, not replayed on the paused replica
        _write(db, 2, "new")

        def read(widget_id: int, read_only: bool) -> str:
            with db.transaction(read_only=read_only) as session:
                return CachedWidgets(session).get(widget_id).name

        def fresh(widget_id: int, read_only: bool = False) -> str:
            return contextvars.Context().run(read, widget_id, read_only)  # wrote nothing

        assert fresh(1) == "new"  # a miss, on the primary, stored
        assert fresh(1) == "new"  # a hit
        assert fresh(2, read_only=True) == "old"  # the replica, as routed: not stored
        assert fresh(2) == "new"  # so this is a miss again, on the primary
        assert fresh(2) == "new"
        assert fresh(2, read_only=True) == "new"  # a read-only transaction is served hits
        stats = db.get_stats()["cache"]
        assert (stats["misses"], stats["hits"], stats["sets"]) == (3, 3, 2), stats
        assert _replica(db)["reads"] == 2  # the read-only transactions, routed whole
    finally:
        db.dispose()


def test_a_cached_miss_runs_on_a_replica_that_has_replayed_what_the_tokens_stand_for(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = _database(replicated_database, replication, cache=QueryCache(MemoryBackend()))
    try:
        _paused_with(db, replication, {})
        _write(db, 1, "new")  # the widgets token now carries this commit's WAL position
        replication.replica.resume_replay()
        lsn = current_lsn(replication.primary.url)
        replication.replica.wait_for(lsn)
        _seen_at(db, lsn)
        db.pop_stats()

        def read() -> str:
            with db.transaction() as session:
                return CachedWidgets(session).get(1).name

        assert contextvars.Context().run(read) == "new"  # a miss, on the replica, stored
        assert contextvars.Context().run(read) == "new"  # a hit
        stats = db.get_stats()["cache"]
        assert (stats["misses"], stats["hits"], stats["sets"]) == (1, 1, 1), stats
        assert _stats(db)["default_transactions_routed"] == 1  # the miss; a hit sends nothing
        assert _replica(db)["reads"] == 1
    finally:
        db.dispose()


def test_a_write_commit_reads_the_primary_position_once_for_the_router_and_the_cache(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = _database(replicated_database, replication, cache=QueryCache(MemoryBackend()))
    try:
        _paused_with(db, replication, {})
        positions: list[str] = []

        @event.listens_for(db.engine, "before_cursor_execute")
        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "pg_current_wal_insert_lsn" in statement:
                positions.append(statement)

        _write(db, 1, "new")
        assert len(positions) == 1  # read by the router, reused for the cache's tokens
        token = db.cache.backend._tokens[db.cache.token_names(["widgets"])[0]]
        assert int(token.partition("@")[2], 16) > 0  # and the tokens carry it
    finally:
        db.dispose()


def test_route_reads_read_only_keeps_default_transactions_on_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = _database(replicated_database, replication, route_reads="read_only")
    try:
        _paused_with(db, replication, {})
        _write(db, 1, "only on the primary")
        with db.transaction() as session:
            assert Widgets(session).get_or_none(1) is not None
        assert _replica(db)["reads"] == 0
        assert type(Session()) is Session  # other sessions are untouched
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_default_transaction_whose_replica_dies_mid_read_runs_again_on_the_primary(
    replicated_database: tuple[str, str], replication: Replication
) -> None:
    db = _database(replicated_database, replication)
    try:
        _paused_with(db, replication, {1: "there"})
        # a monitor that stopped looking: the read, not the monitor, meets the dead replica
        router: Any = db._replicas
        router._stop.set()
        router._thread.join()
        replication.replica.resume_replay()
        assert contextvars.Context().run(lambda: _get(db, 1)) is not None  # a pooled connection
        replication.replica.shutdown()

        def read(session: Session) -> str:
            return Widgets(session).get(1).name

        names = [contextvars.Context().run(db.run_transaction, read) for _ in range(5)]
        assert names == ["there"] * 5
        assert _stats(db)["rerouted_reads"] == 1  # then ejected: the next four chose the primary
        assert _replica(db)["state"] == "down"
        assert _replica(db)["errors"] == 1
    finally:
        db.dispose()


def test_route_reads_is_checked() -> None:
    unknown: Any = "everything"  # what a type checker would refuse, from a config file say
    with pytest.raises(ConfigurationError, match="route_reads"):
        Database("sqlite:///x.db", route_reads=unknown)
    with pytest.raises(ConfigurationError, match="route_reads"):
        Database("postgresql://u:p@h/d", replicas=["postgresql://u:p@r/d"], route_reads=unknown)


def test_a_savepoint_sends_the_rest_of_the_transaction_to_the_primary(
    db: Database, replication: Replication
) -> None:
    _paused_with(db, replication, {1: "there"})
    _write(db, 2, "only on the primary")
    with db.transaction() as session:
        widgets = Widgets(session)
        assert widgets.get_or_none(2) is None  # the replica
        with db.transaction(propagation="nested"):
            assert widgets.get_or_none(2) is not None  # the primary, inside the savepoint
        assert widgets.count() == 2
    assert _replica_checked_out(db) == 0


def test_changes_not_flushed_are_never_overwritten_by_a_reload(
    db: Database, replication: Replication
) -> None:
    _paused_with(db, replication, {1: "old", 2: "other"})
    with db.transaction() as session:
        widgets = Widgets(session)
        first = widgets.get(1)  # on the replica
        widgets.update(widgets.get(2), name="written")  # flushed: the primary from now on
        with session.no_autoflush:
            first.name = "changed, not flushed"
            assert [w.name for w in widgets.find(id=1)] == ["changed, not flushed"]
        assert [w.name for w in widgets.find(id=1)] == ["changed, not flushed"]  # flushed first
    with db.transaction() as session:
        assert Widgets(session).get(1).name == "changed, not flushed"
