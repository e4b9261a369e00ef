"""Which aggregates a relay round takes: the heads (oldest pending messages) that are due, and
on PostgreSQL the walk that locks just enough of them for one round, leaving the others to the
relays running beside it. No I/O: `dalkit.outbox.relay_async` runs what is built here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from dalkit.outbox.messages import IN_LIST_MAX
from dalkit.tables import UTCDateTime, outbox

_c = outbox.c
#: the walk visits at most this many heads per message a round claims: enough to pass the
#: aggregates a dozen other relays hold (each as many as hold its batch), and a bound on what
#: one round reads when nearly every due head is taken (the walk reads the outbox up to its
#: last head, as the heads before the walk did up to their ``limit``-th)
HEADS_PER_MESSAGE = 16


def due_heads(now: dt.datetime, limit: int) -> sa.Select[Any]:
    """The aggregate keys whose oldest pending message is due, oldest first: only the head of
    an aggregate may go out, so a failing message holds back the ones behind it."""
    earlier = outbox.alias("earlier")
    # a scalar subquery, not NOT EXISTS: the planner runs it per row on the (aggregate_key,
    # id) index whatever its statistics say, where an anti-join on a fresh table went quadratic
    head = (
        sa.select(sa.func.min(earlier.c.id))
        .where(earlier.c.aggregate_key == _c.aggregate_key, earlier.c.sent_at.is_(None))
        .scalar_subquery()
    )
    return (
        sa.select(_c.aggregate_key)
        .where(_c.sent_at.is_(None), _c.next_attempt_at <= now, _c.id == head)
        .order_by(_c.id)
        .limit(min(limit, IN_LIST_MAX))  # claim() lists them
    )


def _step(after: str) -> str:
    """The next due head after ``after`` (an id expression), the try of its advisory lock and,
    when it got it, its pending messages (counted up to ``:limit``): three FROM items."""
    table = outbox.name
    return f"""
        (SELECT o.id, o.aggregate_key FROM {table} AS o
         WHERE o.sent_at IS NULL AND o.next_attempt_at <= :now AND {after}
           AND o.id = (SELECT min(e.id) FROM {table} AS e
                       WHERE e.aggregate_key = o.aggregate_key AND e.sent_at IS NULL)
         ORDER BY o.id LIMIT 1) AS h
        CROSS JOIN LATERAL (SELECT pg_try_advisory_xact_lock(
            :namespace, hashtext(h.aggregate_key)) AS locked) AS l
        CROSS JOIN LATERAL (SELECT count(*) AS pending FROM (
            SELECT 1 FROM {table} AS p WHERE l.locked
              AND p.aggregate_key = h.aggregate_key AND p.sent_at IS NULL LIMIT :limit) AS c) AS n
    """


# a recursive walk, one head per step: a lock is tried only where the walk got to, and it stops
# once the locked aggregates hold a round's messages (or after :steps heads)
_LOCK_HEADS = f"""
WITH RECURSIVE walk(id, aggregate_key, locked, total, steps) AS (
    SELECT h.id, h.aggregate_key, l.locked, CASE WHEN l.locked THEN n.pending ELSE 0 END, 1
    FROM {_step("TRUE")}
    UNION ALL
    SELECT h.id, h.aggregate_key, l.locked,
           w.total + CASE WHEN l.locked THEN n.pending ELSE 0 END, w.steps + 1
    FROM walk AS w CROSS JOIN LATERAL {_step("o.id > w.id")}
    WHERE w.total < :limit AND w.steps < :steps
)
SELECT aggregate_key FROM walk WHERE locked ORDER BY id
"""


def lock_heads(now: dt.datetime, limit: int, namespace: int) -> sa.TextClause:
    """PostgreSQL: the due heads, oldest first, whose transaction-level advisory lock this
    transaction got, and only as many as hold the ``limit`` messages a round claims: another
    relay holding a lock is publishing that aggregate right now, and one more relay takes the
    aggregates this one's round would not get to (before, a round locked the ``limit`` oldest
    heads whether it claimed their messages or not, and a second relay found them all taken).

    Args:
        now: The round's time: heads whose next attempt is later wait.
        limit: The most messages the round claims.
        namespace: The first key of the relays' advisory locks.

    Returns:
        The statement; its rows are the locked aggregate keys.
    """
    limit = min(limit, IN_LIST_MAX)  # each locked head adds at least one message
    return sa.text(_LOCK_HEADS).bindparams(
        sa.bindparam("now", now, type_=UTCDateTime()),
        sa.bindparam("namespace", namespace, type_=sa.Integer()),
        sa.bindparam("limit", limit, type_=sa.Integer()),
        sa.bindparam("steps", min(limit * HEADS_PER_MESSAGE, IN_LIST_MAX), type_=sa.Integer()),
    )
