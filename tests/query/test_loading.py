"""Eager loading with a chosen strategy per path, next to the list form, and contains_eager
for a relationship the statement already joins."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from dalkit import InvalidQueryError
from dalkit.query.fields import model_info
from dalkit.query.loading import LoadInput, eager_options

from .models import Article, Author, Remark

ARTICLES = model_info(Article)


def _seed(session: Session) -> None:
    ann, bob = Author(id=1, name="ann"), Author(id=2, name="bob")
    session.add_all([ann, bob])
    session.add_all(
        [
            Article(id=1, author=ann, title="a1"),
            Article(id=2, author=bob, title="b1"),
            Article(id=3, author=ann, title="a2"),
        ]
    )
    session.add_all([Remark(id=i, article_id=1 + i % 3, body=f"r{i}") for i in range(1, 7)])
    session.flush()
    session.expunge_all()


def _counting(session: Session) -> list[str]:
    statements: list[str] = []
    sa.event.listen(
        session.get_bind(),
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: statements.append(statement),
    )
    return statements


def _loaded(article: Article, name: str) -> bool:
    return name not in sa.inspect(article).unloaded


@pytest.mark.parametrize(
    ("load", "queries", "join_in_first"),
    [
        ({"author": "joined", "remarks": "selectin"}, 2, True),
        ({"author": "selectin", "remarks": "joined"}, 2, True),
        ({"author": "subquery", "remarks": "subquery"}, 3, False),
        (["author", "remarks"], 2, True),
    ],
)
def test_each_path_loads_with_its_strategy(
    session: Session, load: LoadInput, queries: int, join_in_first: bool
) -> None:
    _seed(session)
    statements = _counting(session)
    statement = sa.select(Article).order_by(Article.id).options(*eager_options(ARTICLES, load))
    articles = session.scalars(statement).unique().all()
    assert len(statements) == queries
    assert ("JOIN" in statements[0]) is join_in_first
    assert all(_loaded(a, "author") and _loaded(a, "remarks") for a in articles)
    assert [len(a.remarks) for a in articles] == [2, 2, 2]
    assert len(statements) == queries  # nothing was loaded lazily afterwards


def test_a_nested_path_keeps_the_default_for_unnamed_parents(session: Session) -> None:
    _seed(session)
    statements = _counting(session)
    options = eager_options(model_info(Author), {"articles.remarks": "joined"})
    authors = session.scalars(sa.select(Author).order_by(Author.id).options(*options)).all()
    assert len(statements) == 2  # authors, then articles (selectin) JOIN remarks
    assert "JOIN" in statements[1]
    assert [[len(a.remarks) for a in author.articles] for author in authors] == [[2, 2], [2]]


def test_a_relationship_the_filter_joins_is_filled_from_that_join(session: Session) -> None:
    _seed(session)
    statements = _counting(session)
    writer = aliased(Author)
    statement = (
        sa.select(Article)
        .join(Article.author.of_type(writer))
        .where(writer.name == "ann")
        .order_by(Article.id)
        .options(*eager_options(ARTICLES, ["author"], joined={"author": writer}))
    )
    articles = session.scalars(statement).all()
    assert len(statements) == 1
    assert statements[0].count("JOIN") == 1
    assert [(a.id, a.author.name) for a in articles] == [(1, "ann"), (3, "ann")]
    assert len(statements) == 1


async def test_strategies_work_on_an_async_session(async_session: AsyncSession) -> None:
    await async_session.run_sync(_seed)
    options = eager_options(ARTICLES, {"author": "joined", "remarks": "selectin"}, strict=True)
    statement = sa.select(Article).order_by(Article.id).options(*options)
    articles = (await async_session.scalars(statement)).unique().all()
    assert [(a.author.name, len(a.remarks)) for a in articles] == [
        ("ann", 2),
        ("bob", 2),
        ("ann", 2),
    ]


@pytest.mark.parametrize(
    "load",
    [
        {"author": "lazy"},
        {"author": 1},
        {"nope": "joined"},
        ["author.nope"],
        "author",
        ["a.b.c.d.e"],
        [""],
        [f"p{i}" for i in range(40)],
    ],
)
def test_unknown_paths_and_strategies_are_refused(load: object) -> None:
    with pytest.raises(InvalidQueryError):
        eager_options(ARTICLES, load)  # type: ignore[arg-type]
