"""A ``CHAR(n)`` column holds its text padded to ``n``, as PostgreSQL stores it, on SQLite and in
the in-memory repository too: ``'ab'`` reads back ``'ab   '`` from a ``CHAR(5)``, a filter of
``'ab'`` finds the rows given ``'ab'`` and ``'ab '`` alike, and a LIKE pattern matches the padded
text. SQLite and the in-memory repository kept the text as given and found one of the two rows."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import AsyncDatabase, AsyncRepository, Database, InMemoryRepository, Repository

from .conftest import Filled

SECRET = "the char columns' cursor secret"


class _Base(DeclarativeBase):
    pass


class Code(_Base):
    __tablename__ = "char_codes"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(sa.CHAR(5))
    wide: Mapped[str | None] = mapped_column(sa.NCHAR(4))


class Codes(Repository[Code]):
    cursor_secret = SECRET


class AsyncCodes(AsyncRepository[Code]):
    cursor_secret = SECRET


def _rows() -> list[Code]:
    return [Code(id=1, code="ab"), Code(id=2, code="ab "), Code(id=3, code="a", wide="é")]


EXPECTED: dict[str, Any] = {
    "values": ["ab   ", "ab   ", "a    "],
    "wide": [None, None, "é   "],
    "eq": [1, 2],
    "eq padded": [1, 2],
    "in": [1, 2, 3],
    "ne": [3],
    "gt": [1, 2],
    "startswith": [1, 2],
    "endswith b": [],
    "contains": [1, 2],
    "count": 2,
    "walk": [[3, 1], [2]],
}


def _answers(repo: Any) -> dict[str, Any]:
    listed = repo.list(sort="id")
    first = repo.paginate_cursor(limit=2, sort="code")
    second = repo.paginate_cursor(limit=2, sort="code", after=first.next_cursor)
    return {
        "values": [c.code for c in listed],
        "wide": [c.wide for c in listed],
        "eq": sorted(c.id for c in repo.find(code="ab")),
        "eq padded": sorted(c.id for c in repo.find(code="ab  ")),
        "in": sorted(c.id for c in repo.find(code__in=["a", "ab"])),
        "ne": sorted(c.id for c in repo.find(code__ne="ab")),
        "gt": sorted(c.id for c in repo.find(code__gt="a")),
        "startswith": sorted(c.id for c in repo.find(code__startswith="ab ")),
        "endswith b": sorted(c.id for c in repo.find(code__like="%b")),
        "contains": sorted(c.id for c in repo.find(code__contains="b")),
        "count": repo.count(code="ab"),
        "walk": [[c.id for c in first.items], [c.id for c in second.items]],
    }


def test_a_char_column_holds_and_compares_its_text_padded(filled: Filled) -> None:
    assert _answers(filled(Codes, _Base.metadata, _rows())) == EXPECTED


def test_the_in_memory_repository_pads_a_char_columns_updated_text() -> None:
    codes = InMemoryRepository.mirroring(Codes)(_rows())
    codes.update(codes.get(3), code="b")
    assert codes.get(3).code == "b    "


def test_a_core_insert_pads_a_char_columns_text_on_sqlite(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    try:
        _Base.metadata.create_all(database.engine)
        with database.engine.begin() as connection:
            connection.execute(sa.insert(Code), [{"id": 1, "code": "ab"}])
            stored = connection.execute(sa.text("SELECT code FROM char_codes")).scalar()
        assert stored == "ab   "
    finally:
        database.dispose()


async def test_an_async_char_column_holds_and_compares_its_text_as_the_sync_one(
    async_database: AsyncDatabase,
) -> None:
    async with async_database.engine.begin() as connection:
        await connection.run_sync(_Base.metadata.create_all)
    async with async_database.session_factory() as session:
        codes = AsyncCodes(session)
        await codes.add_many(_rows())
        session.expire_all()
        listed = await codes.list(sort="id")
        assert [c.code for c in listed] == EXPECTED["values"]
        assert sorted(c.id for c in await codes.find(code="ab")) == EXPECTED["eq"]
        assert sorted(c.id for c in await codes.find(code__startswith="ab ")) == [1, 2]
        assert await codes.count(code="ab") == 2
        await session.rollback()


#: texts with characters below a space, which PostgreSQL orders without the padding: 'a' below
#: 'a\t'; SQLite and the in-memory repository compared the padded 'a  ' and 'a\t ', and put it
#: above (sort [3, 2, 1, 4, 5], gt 'a' [4, 5], lt 'a' [2, 3])
BELOW_SPACE = ["a", "a\t", "a\x01", "a b", "ab"]
ORDERED: dict[str, Any] = {
    "sort": [1, 3, 2, 4, 5],
    "sort desc": [5, 4, 2, 3, 1],
    "gt": [2, 3, 4, 5],
    "lt": [1, 3],
    "between": [1, 2, 3],
    "walk": [[1, 3], [2, 4], [5]],
    "walk desc": [[5, 4], [2, 3], [1]],
}


def _walk(repo: Any, sort: str) -> list[list[int]]:
    pages = [repo.paginate_cursor(limit=2, sort=sort)]
    while pages[-1].next_cursor is not None and len(pages) < 5:
        pages.append(repo.paginate_cursor(limit=2, sort=sort, after=pages[-1].next_cursor))
    return [[c.id for c in page.items] for page in pages]


def _ordered(repo: Any) -> dict[str, Any]:
    return {
        "sort": [c.id for c in repo.list(sort="code")],
        "sort desc": [c.id for c in repo.list(sort="-code")],
        "gt": sorted(c.id for c in repo.find(code__gt="a")),
        "lt": sorted(c.id for c in repo.find(code__lt="a\t")),
        "between": sorted(c.id for c in repo.find(code__between=["a", "a\t"])),
        "walk": _walk(repo, "code"),
        "walk desc": _walk(repo, "-code"),
    }


def _below_space() -> list[Code]:
    return [Code(id=i, code=text) for i, text in enumerate(BELOW_SPACE, 1)]


def test_a_char_column_is_ordered_without_its_padding_on_every_backend(filled: Filled) -> None:
    assert _ordered(filled(Codes, _Base.metadata, _below_space())) == ORDERED


async def test_an_async_char_column_is_ordered_as_the_sync_one(
    async_database: AsyncDatabase,
) -> None:
    async with async_database.engine.begin() as connection:
        await connection.run_sync(_Base.metadata.create_all)
    async with async_database.session_factory() as session:
        codes = AsyncCodes(session)
        await codes.add_many(_below_space())
        session.expire_all()
        assert [c.id for c in await codes.list(sort="code")] == ORDERED["sort"]
        assert sorted(c.id for c in await codes.find(code__gt="a")) == ORDERED["gt"]
        first = await codes.paginate_cursor(limit=2, sort="code")
        second = await codes.paginate_cursor(limit=2, sort="code", after=first.next_cursor)
        assert [[c.id for c in first.items], [c.id for c in second.items]] == ORDERED["walk"][:2]
        await session.rollback()


class Keyed(_Base):
    __tablename__ = "char_keyed"
    code: Mapped[str] = mapped_column(sa.CHAR(4), primary_key=True)
    n: Mapped[int] = mapped_column()


class KeyedRows(Repository[Keyed]):
    pass


def test_a_char_primary_key_given_unpadded_finds_its_row(database: Database) -> None:
    # get_many found nothing (the row came back under 'ab  ', asked for as 'ab'), and the
    # in-memory get found nothing either
    _Base.metadata.create_all(database.engine)
    with database.session_factory() as session:
        KeyedRows(session).add(Keyed(code="ab", n=1))
        session.commit()
    with database.session_factory() as session:
        rows = KeyedRows(session)
        assert [k.n for k in rows.get_many(["ab", "zz"])] == [1]
        assert rows.get("ab").code == "ab  "
    memory = InMemoryRepository.mirroring(KeyedRows)([Keyed(code="ab", n=1)])
    assert memory.get("ab").code == "ab  "
    assert [k.n for k in memory.get_many(["ab "])] == [1]
