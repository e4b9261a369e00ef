"""Models for the query tests: a self-referential employee table, accounts with sensitive
columns, float readings that may be infinite, and authors with articles and remarks."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Emp(Base):
    __tablename__ = "q_emps"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100))
    age: Mapped[int | None] = mapped_column(sa.Integer)
    manager_id: Mapped[int | None] = mapped_column(sa.ForeignKey("q_emps.id"))

    manager: Mapped[Emp | None] = relationship(remote_side=[id], back_populates="reports")
    reports: Mapped[list[Emp]] = relationship(back_populates="manager", order_by="Emp.id")


class Account(Base):
    __tablename__ = "q_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    ApiToken: Mapped[str | None] = mapped_column(sa.String(64))
    client_SECRET: Mapped[str | None] = mapped_column(sa.String(64))
    nickname: Mapped[str | None] = mapped_column(sa.String(64), info={"sensitive": True})
    token_count: Mapped[int] = mapped_column(default=0, info={"sensitive": False})
    age: Mapped[int] = mapped_column(sa.Integer, default=0)


class Reading(Base):
    __tablename__ = "q_readings"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[float] = mapped_column(sa.Float)


class Author(Base):
    __tablename__ = "q_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))

    articles: Mapped[list[Article]] = relationship(back_populates="author", order_by="Article.id")


class Article(Base):
    __tablename__ = "q_articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("q_authors.id"))
    title: Mapped[str] = mapped_column(sa.String(200))

    author: Mapped[Author] = relationship(back_populates="articles")
    remarks: Mapped[list[Remark]] = relationship(back_populates="article", order_by="Remark.id")


class Remark(Base):
    __tablename__ = "q_remarks"

    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(sa.ForeignKey("q_articles.id"))
    body: Mapped[str] = mapped_column(sa.Text)

    article: Mapped[Article] = relationship(back_populates="remarks")
