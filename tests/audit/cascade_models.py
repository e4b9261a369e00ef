"""Models of the foreign-key cascade tests, on their own metadata: a shelf (not audited) whose
deletion the database carries to its books (ON DELETE CASCADE, audited) and its labels
(ON DELETE SET NULL, audited); a box between shelf and notes (CASCADE through a table that is
not audited); a tree of audited nodes deleting their subtrees; a drawer whose items the
ORM nulls itself (a relationship without a delete cascade, no ON DELETE action); and a rack
whose code its audited slots follow (ON UPDATE CASCADE)."""

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
