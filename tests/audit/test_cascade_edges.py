"""The foreign keys through which a DELETE reaches audited rows are found whichever form of the
parent's table asks first: an ORM-enabled statement names an annotated copy of it, equal to it
as a key of the cache, yet referred to by no foreign key."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dalkit import Audited, Database, UnitOfWork
from dalkit.audit import history


def test_an_orm_delete_statement_asking_first_still_records_the_cascaded_rows(
    db: Database,
) -> None:
    # defined here: a newly audited model renews the cache, so this delete is the first to ask
    class Base(DeclarativeBase):
        metadata = sa.MetaData()

    crates = sa.Table("edge_crates", Base.metadata, sa.Column("id", sa.Integer, primary_key=True))

    class Crate(Base):
        __table__ = crates

    class Bottle(Audited, Base):
        __tablename__ = "edge_bottles"
        crate_id: Mapped[int] = mapped_column(sa.ForeignKey(crates.c.id, ondelete="CASCADE"))
        id: Mapped[int] = mapped_column(primary_key=True)

    db.create_all(Base.metadata)
    with UnitOfWork(db, actor="setup") as uow:
        uow.session.add(Crate(id=1))
        uow.session.flush()
        uow.session.add(Bottle(id=1, crate_id=1))
    with UnitOfWork(db, actor="me") as uow:
        uow.session.execute(sa.delete(Crate).where(crates.c.id == 1))
    with db.session() as session:
        assert session.scalars(sa.select(Bottle.id)).all() == []
        entries = history(session, Bottle, 1)
    assert [(e.action, e.actor_id) for e in entries] == [("create", "setup"), ("delete", "me")]
