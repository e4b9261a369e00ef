"""Repository adds of new plain entities skip the unit of work's machinery
(dalkit.query.plain_inserts): the INSERT and the entities after it are those of the ORM's
flush, a failed INSERT leaves the session as a failed flush does, and anything the plain insert
would miss is flushed the ORM's way."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, backref, mapped_column, relationship
from sqlalchemy.orm.attributes import instance_state

from dalkit import (
    AsyncDatabase,
    AsyncRepository,
    Database,
    IntegrityError,
    Repository,
    TenantScoped,
    TransactionAbortedError,
)
from dalkit.query.plain_entities import _plan_of
from dalkit.query.plain_inserts import _insertable, flush_neutral

from .models import EPOCH, Comment, Post, User


class Users(Repository[User]):
    pass


class AsyncUsers(AsyncRepository[User]):
    pass


def _user(n: int, **values: Any) -> User:
    return User(email=f"insert{n}@example.com", name=f"user {n}", **values)


@flush_neutral  # declared once: the registry of neutral listeners is process-wide
def _note_flush(session: Session, flush_context: Any, instances: Any) -> None:
    session.info["flushes"].append(flush_context)


def _watch(session: Session) -> list[Any]:
    """The ORM flushes of ``session``, seen by a listener the plain insert may skip."""
    seen: list[Any] = session.info.setdefault("flushes", [])
    event.listen(session, "before_flush", _note_flush)
    return seen


def _the_orm_way(session: Session) -> None:
    """A before_flush listener not declared neutral: every flush of ``session`` is the ORM's."""
    event.listen(session, "before_flush", lambda *args: None)


def _state_of(entity: Any, session: Session) -> dict[str, Any]:
    state = instance_state(entity)
    values = {k: v for k, v in state.dict.items() if not k.startswith("_")}
    return {
        "key": state.key[0] if state.key else None,
        "values": {k: v for k, v in values.items() if k not in ("id", "email", "name")},
        "loaded": sorted(values),
        "committed": dict(state.committed_state),
        "expired": set(state.expired_attributes),
        "unloaded": set(state.unloaded),
        "modified": state.modified,
        "persistent": state.persistent,
        "held": session.identity_map.get(state.key) is entity if state.key else False,
        "new": entity in session.new,
        "dirty": bool(session.dirty),
    }


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"age": None, "score": None, "created_at": EPOCH}, id="explicit None"),
        pytest.param({"age": 40, "secret_note": "x", "score": 3}, id="values"),
    ],
)
def test_a_plain_insert_gives_the_entity_the_flush_gives(
    sql_session: Session, values: dict[str, Any]
) -> None:
    seen = _watch(sql_session)
    plain = Users(sql_session).add(_user(1, **values))
    assert seen == []  # no flush ran
    plain_state = _state_of(plain, sql_session)
    _the_orm_way(sql_session)
    orm = Users(sql_session).add(_user(2, **values))
    assert len(seen) == 1
    assert _state_of(orm, sql_session) == plain_state
    assert plain.id is not None
    assert orm.id == plain.id + 1
    sql_session.expire_all()  # what reached the database is what the entity says
    assert (
        _state_of(sql_session.get(User, plain.id), sql_session)["values"]
        == (_state_of(sql_session.get(User, orm.id), sql_session)["values"])
    )


def test_add_many_is_one_plain_insert_in_order(sql_session: Session) -> None:
    seen = _watch(sql_session)
    added = Users(sql_session).add_many([_user(n, age=n) for n in range(10, 15)])
    assert seen == []
    assert [u.age for u in added] == list(range(10, 15))
    assert [u.id for u in added] == sorted(u.id for u in added)
    rows = sql_session.execute(sa.select(User.id, User.age).where(User.age >= 10)).all()
    assert sorted(rows) == [(u.id, u.age) for u in added]


def test_a_plain_entity_flushes_its_changes_and_loads_its_relationships(
    sql_session: Session,
) -> None:
    seen = _watch(sql_session)
    users = Users(sql_session)
    user = users.add(_user(20))
    assert seen == []
    assert user.posts == []  # a lazy load, as for a flushed entity
    user.name = "renamed"
    user.posts.append(Post(title="first"))
    sql_session.flush()
    assert len(seen) == 1
    sql_session.expire_all()
    again = users.get(user.id)
    assert again is user
    assert (again.name, [p.title for p in again.posts]) == ("renamed", ["first"])


def test_a_failed_plain_insert_leaves_the_session_as_a_failed_flush_does(
    database: Database,
) -> None:
    with database.session_factory() as session:
        users = Users(session)
        users.add(_user(30))
        session.commit()
        outcomes = []
        for orm_way in (False, True):
            seen = _watch(session)
            if orm_way:
                _the_orm_way(session)
            duplicate = _user(30)
            with pytest.raises(IntegrityError):
                users.add(duplicate)
            assert len(seen) == orm_way
            state = instance_state(duplicate)
            with pytest.raises(TransactionAbortedError) as refused:
                session.execute(sa.select(1))
            outcomes.append(
                (state.transient, state.pending, duplicate in session, str(refused.value)[:80])
            )
            session.rollback()
            assert users.count(email="insert30@example.com") == 1
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][:3] == (True, False, False)


def test_a_failed_plain_insert_in_a_savepoint_rolls_back_the_savepoint_only(
    database: Database,
) -> None:
    outcomes = []
    for orm_way in (False, True):
        with database.session_factory() as session:
            users = Users(session)
            seen = _watch(session)
            if orm_way:
                _the_orm_way(session)
            kept = users.add(_user(90 + orm_way))
            with pytest.raises(IntegrityError), session.begin_nested():
                users.add(_user(90 + orm_way))
            assert len(seen) == 2 * orm_way
            outcomes.append((kept in session, users.count(email=kept.email), session.is_active))
            session.rollback()
    assert outcomes == [(True, 1, True), (True, 1, True)]


class _Other(DeclarativeBase):
    pass


class Stamped(_Other):
    """Defaults computed by the server: the flush fetches them with RETURNING where it can
    (eager_defaults="auto"), else leaves them expired, to load on access."""

    __tablename__ = "plain_insert_stamped"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(20), server_default="made")
    made_at: Mapped[dt.datetime] = mapped_column(server_default=sa.func.current_timestamp())


class Versioned(_Other):
    __tablename__ = "plain_insert_versioned"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Scoped(TenantScoped, _Other):
    __tablename__ = "plain_insert_scoped"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture
def stamped_session(sql_session: Session) -> Session:
    stamped = _Other.metadata.tables["plain_insert_stamped"]
    _Other.metadata.create_all(sql_session.connection(), tables=[stamped])
    return sql_session


def test_server_defaults_are_expired_then_loaded_as_after_a_flush(
    stamped_session: Session,
) -> None:
    class Stamps(Repository[Stamped]):
        pass

    stamps = Stamps(stamped_session)
    seen = _watch(stamped_session)
    plain = [stamps.add(Stamped()), stamps.add(Stamped(label="given"))]
    assert seen == []
    plain_states = [_state_of(entity, stamped_session) for entity in plain]
    _the_orm_way(stamped_session)
    orm = [stamps.add(Stamped()), stamps.add(Stamped(label="given"))]
    assert len(seen) == 2
    assert [_state_of(entity, stamped_session) for entity in orm] == plain_states
    assert [entity.label for entity in plain] == ["made", "given"]
    assert isinstance(plain[0].made_at, dt.datetime)


def _before_insert(mapper: Any, connection: Any, target: Any) -> None:
    target.age = 77


@pytest.mark.parametrize(
    "case",
    ["pending change", "relationship set", "already pending", "twice", "before_insert"],
)
def test_what_the_plain_insert_cannot_do_is_flushed_the_orm_way(
    sql_session: Session, case: str
) -> None:
    users = Users(sql_session)
    seen = _watch(sql_session)
    user = _user(40)
    if case == "pending change":
        sql_session.add(_user(41))
        users.add(user)
        assert sql_session.scalar(sa.select(sa.func.count()).select_from(User)) == 2
    elif case == "relationship set":
        user.posts = [Post(title="cascaded")]
        users.add(user)
        assert user.posts[0].id is not None
    elif case == "already pending":
        sql_session.add(user)
        users.add(user)
    elif case == "twice":
        users.add_many([user, user])
        assert sql_session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
    else:
        event.listen(User, "before_insert", _before_insert)
        try:
            users.add(user)
        finally:
            event.remove(User, "before_insert", _before_insert)
        assert user.age == 77
    assert len(seen) == 1
    assert user.id is not None
    assert user in sql_session


def test_a_listener_not_declared_neutral_gets_the_orm_flush(sql_session: Session) -> None:
    flushed: list[Any] = []
    event.listen(sql_session, "after_flush", lambda session, context: flushed.append(context))
    Users(sql_session).add(_user(50))
    assert len(flushed) == 1


def test_entities_the_flush_orders_or_scopes_are_left_to_it() -> None:
    with Session() as unbound:  # decided before any connection is asked for
        assert _insertable(unbound, [_user(1)]) is User.__mapper__
        for entity in (Versioned(version=1), Scoped(), Comment(body="x", post=Post(title="t"))):
            assert _insertable(unbound, [entity]) is None
        assert _insertable(unbound, [_user(1), Comment(body="x")]) is None  # two models


class _LoggingSession(Session):
    def flush(self, objects: Any = None) -> None:
        self.info["flushed"] = self.info.get("flushed", 0) + 1
        super().flush(objects)


def test_a_session_class_with_its_own_flush_keeps_it(sql_session: Session) -> None:
    with _LoggingSession(bind=sql_session.get_bind()) as session:
        Users(session).add(_user(60))
        assert session.info["flushed"] == 1
        session.rollback()


def test_a_committed_plain_insert_is_read_back(database: Database) -> None:
    with database.transaction() as session:
        seen = _watch(session)
        added_id = Users(session).add(_user(70, age=7)).id
        assert seen == []
    with database.transaction() as session:
        found = Users(session).get(added_id)
        assert found is not None
        assert (found.email, found.age, found.score) == ("insert70@example.com", 7, 0)


async def test_async_adds_are_plain(async_database: AsyncDatabase) -> None:
    async with async_database.transaction() as session:
        seen = _watch(session.sync_session)
        users = AsyncUsers(session)
        added = await users.add(_user(80))
        many = await users.add_many([_user(81), _user(82)])
        assert seen == []
        assert instance_state(added).key == (User, (added.id,), None)
        assert [u.id for u in many] == [added.id + 1, added.id + 2]
        added.name = "async renamed"
    with pytest.raises(TransactionAbortedError):  # the failed flush ended the transaction
        async with async_database.transaction() as session:
            again = await AsyncUsers(session).get(added.id)
            assert again is not None
            assert again.name == "async renamed"
            with pytest.raises(IntegrityError):
                await AsyncUsers(session).add(_user(80))
            with pytest.raises(TransactionAbortedError):
                await session.execute(sa.select(1))


def test_a_relationship_configured_later_is_seen_by_plain_inserts_and_reads() -> None:
    class Late(DeclarativeBase):
        pass

    class Owner(Late):
        __tablename__ = "late_owners"
        id: Mapped[int] = mapped_column(primary_key=True)

    statement = sa.select(Owner)
    with Session() as unbound:  # both decided, and remembered, before Pet exists
        assert _insertable(unbound, [Owner()]) is Owner.__mapper__
    assert _plan_of(statement) is not None  # a plain read

    class Pet(Late):
        __tablename__ = "late_pets"
        id: Mapped[int] = mapped_column(primary_key=True)
        owner_id: Mapped[int] = mapped_column(sa.ForeignKey("late_owners.id"))
        owner: Mapped[Owner] = relationship(backref=backref("pets", lazy="selectin"))

    sa.orm.configure_mappers()
    owner = Owner()
    owner.pets = [Pet()]  # type: ignore[attr-defined]  # added to Owner by the backref
    with Session() as unbound:
        assert _insertable(unbound, [owner]) is None  # a relationship set: the flush's
    assert _plan_of(statement) is None  # pets are loaded eagerly now: the ORM's read
