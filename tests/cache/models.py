"""Models of the cache tests: foreign keys that cascade, an association table, joined
inheritance, and a counter row for the cross-process tests."""

from __future__ import annotations

from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


book_tag = sa.Table(
    "cache_book_tag",
    Base.metadata,
    sa.Column("book_id", sa.ForeignKey("cache_book.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", sa.ForeignKey("cache_tag.id", ondelete="CASCADE"), primary_key=True),
)


class Author(Base):
    __tablename__ = "cache_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "cache_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(50), unique=True)
    author_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("cache_author.id", ondelete="CASCADE")
    )
    author: Mapped[Author | None] = relationship(back_populates="books")
    tags: Mapped[list[Tag]] = relationship(secondary=book_tag)


class Tag(Base):
    __tablename__ = "cache_tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(50))


class Animal(Base):
    __tablename__ = "cache_animal"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    name: Mapped[str] = mapped_column(sa.String(50))
    # SQLAlchemy types it as an instance variable: ClassVar would not type-check
    __mapper_args__ = {  # noqa: RUF012
        "polymorphic_on": "kind",
        "polymorphic_identity": "animal",
    }


class Dog(Animal):
    __tablename__ = "cache_dog"
    id: Mapped[int] = mapped_column(sa.ForeignKey("cache_animal.id"), primary_key=True)
    tricks: Mapped[int] = mapped_column(default=0)
    __mapper_args__ = {"polymorphic_identity": "dog"}  # noqa: RUF012


class Counter(Base):
    __tablename__ = "cache_counter"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


#: the mapped tables, typed as tables (``Model.__table__`` is only a FromClause to mypy)
author_table = cast(sa.Table, Author.__table__)
book_table = cast(sa.Table, Book.__table__)
tag_table = cast(sa.Table, Tag.__table__)
