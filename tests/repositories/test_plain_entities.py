"""Repository reads of plain models skip the ORM's execution (dalkit.query.plain_entities): the
entities they give are those ``Session.execute`` gives, and anything the plain read would miss
sends the read the ORM's way."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.orm.attributes import instance_state

from dalkit import AsyncDatabase, AsyncRepository, Repository, TenantScoped
from dalkit.query.plain_entities import load_plain, select_neutral

from .models import EPOCH, Post, User


class Users(Repository[User]):
    pass


class Posts(Repository[Post]):
    pass


class AsyncUsers(AsyncRepository[User]):
    pass


def _user(n: int) -> User:
    return User(email=f"plain{n}@example.com", name=f"user {n}", age=30 + n, created_at=EPOCH)


@select_neutral  # declared once: the registry of neutral listeners is process-wide
def _note_execution(state: Any) -> None:
    state.session.info["orm_executions"].append(state)


def _watch(session: Session) -> list[Any]:
    """The ORM executions of ``session``, seen by a listener the plain read may ignore."""
    seen: list[Any] = session.info.setdefault("orm_executions", [])
    event.listen(session, "do_orm_execute", _note_execution)
    return seen


def _state_of(entity: Any) -> dict[str, Any]:
    state = instance_state(entity)
    return {
        "key": state.key,
        "values": {k: v for k, v in state.dict.items() if not k.startswith("_")},
        "committed": dict(state.committed_state),
        "expired": set(state.expired_attributes),
        "modified": state.modified,
        "load_options": [type(option) for option in state.load_options],
        "load_path": state.load_path.path,
        "session": state.session_id,
    }


def test_plain_reads_give_the_entities_the_orm_gives(sql_session: Session) -> None:
    sql_session.add_all([_user(1), _user(2)])
    sql_session.flush()
    sql_session.expunge_all()
    seen = _watch(sql_session)
    users = Users(sql_session)
    plain = users.list(sort="id")
    first = users.get(plain[0].id)
    assert seen == []  # neither read went through Session.execute
    assert first is plain[0]
    plain_states = [_state_of(user) for user in plain]
    sql_session.expunge_all()
    statement = sa.select(User).where(User.email.like("plain%")).order_by(User.id)
    orm = sql_session.execute(statement.options(*users._q.loader_options(None, False)))
    assert len(seen) == 1
    assert [_state_of(user) for user in orm.scalars()] == plain_states


def test_a_plain_entity_flushes_its_changes_and_its_lazy_loads_hide_deleted_rows(
    sql_session: Session,
) -> None:
    author = _user(3)
    author.posts = [Post(title="kept"), Post(title="gone")]
    sql_session.add(author)
    sql_session.flush()
    Posts(sql_session).delete(author.posts[1])
    sql_session.flush()
    author_id = author.id
    sql_session.expunge_all()
    seen = _watch(sql_session)
    found = Users(sql_session).get(author_id)
    assert found is not None
    assert seen == []
    assert [post.title for post in found.posts] == ["kept"]  # the criteria reached the lazy load
    found.name = "renamed"
    sql_session.flush()
    sql_session.expunge_all()
    assert sql_session.get(User, author_id).name == "renamed"  # type: ignore[union-attr]


def test_an_entity_the_session_holds_keeps_its_values_and_gets_its_expired_ones(
    sql_session: Session,
) -> None:
    held = _user(4)
    sql_session.add(held)
    sql_session.flush()
    # behind the ORM's back: the session is not told
    sql_session.execute(sa.text("UPDATE users SET name = 'changed', age = 99"))
    users = Users(sql_session)
    assert users.list(email="plain4@example.com") == [held]
    assert (held.name, held.age) == ("user 4", 34)  # a query never overwrites loaded values
    sql_session.expire(held, ["name"])
    seen = _watch(sql_session)
    assert users.list(email="plain4@example.com") == [held]
    assert seen == []
    assert (held.name, held.age) == ("changed", 34)  # the expired one came from the row
    assert not instance_state(held).expired_attributes
    assert not instance_state(held).modified


def test_a_pending_change_or_a_listener_that_changes_selects_sends_the_read_the_orm_way(
    sql_session: Session,
) -> None:
    sql_session.add(_user(5))  # not flushed: the read must autoflush it
    seen = _watch(sql_session)
    assert [user.name for user in Users(sql_session).list(email="plain5@example.com")] == ["user 5"]
    assert len(seen) == 1
    changed: list[Any] = []
    event.listen(sql_session, "do_orm_execute", changed.append)  # not declared neutral
    assert Users(sql_session).list(email="plain5@example.com")[0].name == "user 5"
    assert len(changed) == 1
    assert len(seen) == 2


class _Other(DeclarativeBase):
    pass


class Parent(_Other):
    __tablename__ = "plain_parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    children: Mapped[list[Child]] = relationship(lazy="selectin")


class Child(_Other):
    __tablename__ = "plain_children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(sa.ForeignKey("plain_parents.id"))
    note: Mapped[str] = mapped_column(deferred=True)


class Base_(_Other):
    __tablename__ = "plain_bases"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    __mapper_args__ = {  # noqa: RUF012
        "polymorphic_on": "kind",
        "polymorphic_identity": "base",
    }


class Derived(Base_):
    __mapper_args__ = {"polymorphic_identity": "derived"}  # noqa: RUF012


class Loaded(_Other):
    __tablename__ = "plain_loaded"
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.mark.parametrize(
    "statement",
    [
        pytest.param(sa.select(Parent), id="eager relationship"),
        pytest.param(sa.select(Child), id="deferred column"),
        pytest.param(sa.select(Base_), id="inheritance"),
        pytest.param(sa.select(User.id, User.name), id="columns"),
        pytest.param(sa.select(User, Post).join(User.posts), id="two entities"),
        pytest.param(sa.select(User).options(sa.orm.selectinload(User.posts)), id="eager option"),
        pytest.param(sa.select(User).execution_options(populate_existing=True), id="populate"),
        pytest.param(sa.text("SELECT * FROM users"), id="text"),
    ],
)
def test_what_the_plain_read_cannot_give_is_left_to_the_orm(statement: Any) -> None:
    with Session() as unbound:  # nothing is sent: the refusal comes before any connection
        assert load_plain(unbound, statement, None) is None


def test_a_load_listener_on_the_class_is_left_to_the_orm() -> None:
    def on_load(target: Any, context: Any) -> None:
        pass

    event.listen(Loaded, "load", on_load)
    try:
        with Session() as unbound:
            assert load_plain(unbound, sa.select(Loaded), None) is None
    finally:
        event.remove(Loaded, "load", on_load)


async def test_async_repository_reads_are_plain(async_database: AsyncDatabase) -> None:
    async with async_database.transaction() as session:
        added = await AsyncUsers(session).add(_user(6))
        added_id = added.id
    async with async_database.transaction() as session:
        seen = _watch(session.sync_session)
        users = AsyncUsers(session)
        found = await users.get(added_id)
        listed = await users.list(email="plain6@example.com")
        assert found is not None
        assert listed == [found]
        assert seen == []
        assert found.name == "user 6"
        assert instance_state(found).key == (User, (added_id,), None)
        found.name = "async renamed"
    async with async_database.transaction() as session:
        again = await AsyncUsers(session).get(added_id)
        assert again is not None
        assert again.name == "async renamed"


class _LoggingSession(Session):
    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.info["executed"] = self.info.get("executed", 0) + 1
        return super().execute(*args, **kwargs)


def test_a_session_class_with_its_own_execute_keeps_it(sql_session: Session) -> None:
    with _LoggingSession(bind=sql_session.get_bind()) as session:
        assert Users(session).list(email="nobody@example.com") == []
        assert session.info["executed"] == 1


class Memo(TenantScoped, _Other):  # its class installs tenant scoping in every session
    __tablename__ = "plain_memos"
    id: Mapped[int] = mapped_column(primary_key=True)


def test_tenant_scoping_leaves_plain_reads_of_models_that_reach_no_scoped_one(
    sql_session: Session,
) -> None:
    seen = _watch(sql_session)
    assert Users(sql_session).list(email="nobody@example.com") == []
    assert seen == []
    with Session() as unbound:  # a scoped model's select is the tenant listener's to change
        assert load_plain(unbound, sa.select(Memo), None) is None
