"""Which statements a replica may run for a default transaction (no servers needed)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from dalkit.engine import autoroute
from dalkit.engine.autoroute import RoutingSession, plain_select

from .models import Widget

widgets: sa.Table = Widget.__table__  # type: ignore[assignment]


@pytest.mark.parametrize(
    "statement",
    [
        sa.select(Widget).where(Widget.id == 1),
        sa.select(sa.func.count()).select_from(widgets).where(widgets.c.name.ilike("a%")),
        sa.select(sa.literal(1)).select_from(widgets).limit(1),
        sa.select(sa.func.lower(Widget.name)).where(Widget.id.in_(sa.select(widgets.c.id))),
    ],
    ids=["entities", "count", "exists", "function in a subquery"],
)
def test_plain_selects_may_go_to_a_replica(statement: sa.Select[tuple[object]]) -> None:
    assert plain_select(statement)
    assert plain_select(statement)  # the second answer comes from the shape's memo


@pytest.mark.parametrize(
    "statement",
    [
        sa.select(Widget).with_for_update(),
        sa.select(sa.func.nextval("widget_ids")),
        sa.select(sa.literal_column("nextval('widget_ids')")),
        sa.select(Widget).where(sa.text("id = 1")),
        sa.select(sa.func.my_function_that_writes(Widget.id)),
        sa.select(sa.insert(widgets).values(id=1, name="x").returning(widgets.c.id).cte("written")),
        sa.update(widgets).values(name="x"),
        sa.text("SELECT 1"),
    ],
    ids=[
        "row lock",
        "nextval",
        "literal column",
        "text criteria",
        "unknown function",
        "DML in a CTE",
        "update",
        "text",
    ],
)
def test_anything_else_stays_on_the_primary(statement: object) -> None:
    assert not plain_select(statement)


def test_a_session_without_a_router_or_deferred_begin_routes_nothing() -> None:
    engine = sa.create_engine("sqlite://")
    session = RoutingSession(bind=engine)
    assert session.get_bind(clause=sa.select(Widget)) is engine
    assert autoroute.replica_of(session) is None
    assert autoroute.replica_of(Session(bind=engine)) is None
    assert not autoroute.read_on_replica(session)
    assert not autoroute.read_on_replica(object())
    engine.dispose()
