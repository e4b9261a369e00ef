"""Models of the foreign-key cascade tests, on their own metadata: a shelf (not audited) whose
deletion the database carries to its books (ON DELETE CASCADE, audited) and its labels
(ON DELETE SET NULL, audited); a box between shelf and notes (CASCADE through a table that is
not audited); a tree of audited nodes deleting their subtrees; a drawer whose items the
ORM nulls itself (a relationship without a delete cascade, no ON DELETE action); a rack
whose code its audited slots follow (ON UPDATE CASCADE), and its teams (not audited) and
from them their audited members (ON UPDATE CASCADE twice), and its audited seats in their
primary key; and an audited crate whose code its audited tags follow (ON UPDATE CASCADE)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dalkit import Audited


class CascadeBase(DeclarativeBase):
    pass


class Shelf(CascadeBase):
    __tablename__ = "fk_shelves"
    id: Mapped[int] = mapped_column(primary_key=True)


class Book(Audited, CascadeBase):
    __tablename__ = "fk_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(sa.ForeignKey("fk_shelves.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(sa.String(40))


class Label(Audited, CascadeBase):
    __tablename__ = "fk_labels"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("fk_shelves.id", ondelete="SET NULL")
    )


class Box(CascadeBase):
    __tablename__ = "fk_boxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(sa.ForeignKey("fk_shelves.id", ondelete="CASCADE"))


class Note(Audited, CascadeBase):
    __tablename__ = "fk_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    box_id: Mapped[int] = mapped_column(sa.ForeignKey("fk_boxes.id", ondelete="CASCADE"))


class Node(Audited, CascadeBase):
    __tablename__ = "fk_nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(sa.ForeignKey("fk_nodes.id", ondelete="CASCADE"))


class Drawer(CascadeBase):
    __tablename__ = "fk_drawers"
    id: Mapped[int] = mapped_column(primary_key=True)
    items: Mapped[list[Item]] = relationship(back_populates="drawer")


class Item(Audited, CascadeBase):
    __tablename__ = "fk_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    drawer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("fk_drawers.id"))
    drawer: Mapped[Drawer | None] = relationship(back_populates="items")


class Rack(CascadeBase):
    __tablename__ = "fk_racks"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(10), unique=True)


class Slot(Audited, CascadeBase):
    __tablename__ = "fk_slots"
    id: Mapped[int] = mapped_column(primary_key=True)
    rack_code: Mapped[str] = mapped_column(sa.ForeignKey("fk_racks.code", onupdate="CASCADE"))


class Team(CascadeBase):
    __tablename__ = "fk_teams"
    __table_args__ = (sa.UniqueConstraint("rack_code", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    rack_code: Mapped[str] = mapped_column(sa.ForeignKey("fk_racks.code", onupdate="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(10))


class Member(Audited, CascadeBase):
    __tablename__ = "fk_members"
    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["rack_code", "team_name"], ["fk_teams.rack_code", "fk_teams.name"], onupdate="CASCADE"
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    rack_code: Mapped[str] = mapped_column(sa.String(10))
    team_name: Mapped[str] = mapped_column(sa.String(10))


class Seat(Audited, CascadeBase):
    __tablename__ = "fk_seats"
    rack_code: Mapped[str] = mapped_column(
        sa.ForeignKey("fk_racks.code", onupdate="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(primary_key=True)


class Crate(Audited, CascadeBase):
    __tablename__ = "fk_crates"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(10), unique=True)
    weight: Mapped[int] = mapped_column(default=0)


class Tag(Audited, CascadeBase):
    __tablename__ = "fk_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    crate_code: Mapped[str] = mapped_column(sa.ForeignKey("fk_crates.code", onupdate="CASCADE"))
