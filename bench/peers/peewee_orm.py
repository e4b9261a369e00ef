"""peewee as its documentation shows it: a ``PostgresqlDatabase`` (autocommit, one connection
per thread), ``Model.get_by_id`` / ``select().where().order_by().limit()`` / ``create``. (Its
``insert_many`` loads run at a few thousand rows/s here: not timed, to keep the run short.)"""

from __future__ import annotations

from collections.abc import Sequence

import peewee as pw

from bench.peers.base import PAGE_SIZE, TABLE, Row, Target

database = pw.PostgresqlDatabase(None)


class PeeweeItem(pw.Model):
    id = pw.AutoField()
    name = pw.CharField(max_length=100)
    email = pw.CharField(max_length=100)
    category = pw.IntegerField()
    score = pw.IntegerField()
    created_at = pw.DateTimeField()

    class Meta:
        database = database
        table_name = TABLE


class PeeweeSync:
    label = "peewee"

    def setup(self, target: Target, pool_size: int) -> None:
        database.init(
            target.database,
            user=target.user,
            password=target.password,
            host=target.host,
            port=target.port,
        )
        database.connect(reuse_if_open=True)

    def get(self, ident: int) -> object:
        return PeeweeItem.get_by_id(ident)

    def page(self, category: int) -> Sequence[object]:
        query = (
            PeeweeItem.select()
            .where(PeeweeItem.category == category)
            .order_by(PeeweeItem.created_at.desc(), PeeweeItem.id)
            .limit(PAGE_SIZE)
        )
        return list(query)

    def insert(self, row: Row) -> object:
        return PeeweeItem.create(**row)

    def teardown(self) -> None:
        database.close()
