"""The in-memory LIKE matcher is linear (no backtracking over ``%``) and agrees with a
reference regex, and with SQLite and PostgreSQL, on what matches."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from dalkit import InMemoryRepository, Repository
from dalkit.query.like import ANY_STRING, like_matches, parse_like

from .models import Emp


class Emps(Repository[Emp]):
    pass


def _reference(tokens: list[str | int], text: str, fold: bool) -> bool:
    regex = "".join(
        (".*" if t == ANY_STRING else ".") if isinstance(t, int) else re.escape(t) for t in tokens
    )
    flags = re.DOTALL | (re.IGNORECASE | re.ASCII if fold else 0)
    return re.fullmatch(regex, text, flags) is not None


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.text(alphabet="ab%_Aé\\", max_size=10).filter(lambda p: not p.endswith("\\")),
    text=st.text(alphabet="abAé_%", max_size=12),
    fold=st.booleans(),
)
def test_the_matcher_agrees_with_a_regex(pattern: str, text: str, fold: bool) -> None:
    tokens = parse_like(pattern)
    assert like_matches(tokens, text, fold_case=fold) == _reference(tokens, text, fold)


@pytest.mark.slow
def test_twelve_wildcards_over_many_rows_finish() -> None:
    # a backtracking matcher tries C(90, 12), about 10**14, ways to place twelve wildcards in
    # a text of 90 a's without a b: this test would not end. Its speed is no assert here
    rows = [Emp(id=i, email="a" * 90 + str(i), age=i) for i in range(200)]  # fits String(100)
    repo = InMemoryRepository.mirroring(Emps)(rows)
    pattern = "%a" * 12 + "%b%"
    assert repo.find(email__like=pattern) == []
    assert repo.find(email__ilike=pattern) == []
    assert repo.count(email__like="%a%a%a%a%a%a%a%a%a%a%a%a%1") == 20  # ids ending in 1


def test_non_ascii_case_is_not_folded_as_on_sqlite(session: Session) -> None:
    rows = [Emp(id=1, email="ÉCOLE", age=1), Emp(id=2, email="Ecole", age=2)]
    sql = Emps(session)
    sql.add_many(rows)
    memory = InMemoryRepository.mirroring(Emps)(
        [Emp(id=1, email="ÉCOLE", age=1), Emp(id=2, email="Ecole", age=2)]
    )
    ascii_fold = [e.id for e in memory.find(email__ilike="ecole")]
    assert ascii_fold == [2]
    assert [e.id for e in memory.find(email__ilike="école")] == []
    if session.get_bind().dialect.name == "sqlite":
        assert [e.id for e in sql.find(email__ilike="ecole")] == ascii_fold
        assert [e.id for e in sql.find(email__ilike="école")] == []
