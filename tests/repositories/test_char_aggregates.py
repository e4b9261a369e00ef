"""QueryBuilder's min() and max() of a ``CHAR(n)`` column, their HAVING comparisons and the
orders by them or by the column, as PostgreSQL gives them: the texts compared without their
padding (``'a'`` below ``'a\\t'``), on SQLite too, and as the in-memory repository compares the
same values in its filters and sorts. SQLite compared the padded texts, where ``'a\\t   '`` is
below ``'a    '`` (a tab is below a space)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import InMemoryRepository, QueryBuilder, Repository

from .conftest import Filled


class _Base(DeclarativeBase):
    pass


class Graded(_Base):
    __tablename__ = "char_graded"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    team: Mapped[int] = mapped_column()
    code: Mapped[str] = mapped_column(sa.CHAR(5))


class GradedRows(Repository[Graded]):
    pass


#: team: its codes; PostgreSQL orders them 'a' < 'a\x01' < 'a\t' < 'a b' < 'ab'
TEAMS = {1: ["a", "a\t"], 2: ["a\x01", "a b"], 3: ["ab"]}
#: HAVING min(code) < BELOW and HAVING max(code) <= AT_MOST
BELOW = AT_MOST = "a\t"

EXPECTED: dict[str, Any] = {
    "min": {1: "a    ", 2: "a\x01   ", 3: "ab   "},
    "max": {1: "a\t   ", 2: "a b  ", 3: "ab   "},
    "min below": [1, 2],
    "max at most": [1],
    "by min desc": [3, 2, 1],
    "by code": ["a    ", "a\x01   ", "a\t   ", "a b  ", "ab   "],
}


def _rows() -> list[Graded]:
    numbered = [(team, code) for team, codes in TEAMS.items() for code in codes]
    return [Graded(id=i, team=team, code=code) for i, (team, code) in enumerate(numbered, 1)]


def _from_the_builder(repo: Any) -> dict[str, Any]:
    """The answers of QueryBuilder's statements, run on the repository's database."""
    session = repo.session
    dialect = session.get_bind().dialect.name
    grouped = QueryBuilder(Graded, dialect=dialect).group_by("team")
    by_team = grouped.order_by("team")

    def run(builder: QueryBuilder) -> list[Any]:
        rows = session.execute(builder.build()).all()
        return [row[0] if len(row) == 1 else tuple(row) for row in rows]

    per_team = run(by_team.select("team", "min(code)", "max(code)"))
    by_min = grouped.select("team").order_by("min(code)", "desc")
    return {
        "min": {team: low for team, low, _ in per_team},
        "max": {team: high for team, _, high in per_team},
        "min below": run(by_team.select("team").having("min(code)", "<", BELOW)),
        "max at most": run(by_team.select("team").having("max(code)", "<=", AT_MOST)),
        "by min desc": run(by_min),
        "by code": run(QueryBuilder(Graded, dialect=dialect).select("code").order_by("code")),
    }


def _from_the_memory(repo: Any) -> dict[str, Any]:
    """The same answers from the in-memory repository's sorts and filters."""
    everyone = repo.list(sort="code")
    ordered = {team: [g.code for g in repo.list(sort="code", team=team)] for team in TEAMS}
    return {
        "min": {team: codes[0] for team, codes in ordered.items()},
        "max": {team: codes[-1] for team, codes in ordered.items()},
        "min below": sorted({g.team for g in repo.find(code__lt=BELOW)}),
        "max at most": [
            t for t in TEAMS if repo.exists(team=t) and not repo.exists(team=t, code__gt=AT_MOST)
        ],
        # a team's min comes where its first code does in the whole order
        "by min desc": sorted(TEAMS, key=[g.team for g in everyone].index, reverse=True),
        "by code": [g.code for g in everyone],
    }


def test_min_max_and_having_of_a_char_column_compare_it_without_its_padding(
    filled: Filled,
) -> None:
    repo = filled(GradedRows, _Base.metadata, _rows())
    memory = isinstance(repo, InMemoryRepository)
    assert (_from_the_memory(repo) if memory else _from_the_builder(repo)) == EXPECTED
