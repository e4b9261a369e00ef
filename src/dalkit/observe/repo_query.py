"""``RepositoryQuery``: a repository read described without running it, so that ``db.explain()``
can show the plan of exactly the SELECT the repository would send. No I/O.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session

from dalkit.errors import ConfigurationError
from dalkit.query.loading import LoadInput
from dalkit.query.pagination import check_window
from dalkit.query.sorting import SortInput
from dalkit.query.specs import Spec

__all__ = ["RepositoryQuery"]


class _Captured(Exception):
    """Stops a session execution once the statement it would run is known."""

    def __init__(self, statement: Any, params: dict[str, Any]) -> None:
        super().__init__("captured")
        self.statement = statement
        self.params = params


class RepositoryQuery:
    """The SELECT that ``repository.list(*specs, sort=..., ..., **filters)`` would send.

    The arguments are checked as ``list()`` checks them (allow-lists, operators, values, sort
    fields, ``load`` paths), so a bad one raises the same typed error here. The statement
    carries everything the repository adds: the criteria hiding soft-deleted rows, the loader
    options, and, when explained, whatever the session's ``do_orm_execute`` listeners add (the
    current tenant's criteria of [`TenantScoped`][dalkit.TenantScoped] models).

    Args:
        repository: A repository class or instance (SQL, sync or async: only its
            configuration is used).
        *specs: [`Spec`][dalkit.Spec] conditions, as for ``list()``.
        sort: The order, as for ``list()`` (the primary key ends it).
        limit: At most this many rows.
        offset: Rows skipped first.
        load: Relationship paths to eager-load, as for ``list()``.
        include_deleted: Whether soft-deleted rows are included.
        **filters: ``field__op`` filters, as for ``list()``.

    Raises:
        ConfigurationError: ``repository`` is not a repository.
        QueryInputError: A filter, sort, window or load path that ``list()`` would refuse.

    Examples:
        ```python test="skip"
        plan = db.explain(RepositoryQuery(OrderRepository, status="open", sort="-created_at"))
        ```
    """

    def __init__(
        self,
        repository: Any,
        *specs: Spec,
        sort: SortInput | None = None,
        limit: int | None = None,
        offset: int | None = None,
        load: LoadInput | None = None,
        include_deleted: bool = False,
        **filters: Any,
    ) -> None:
        owner = repository if isinstance(repository, type) else type(repository)
        make_plan = getattr(owner, "_plan", None)
        if make_plan is None or not hasattr(owner, "model"):
            raise ConfigurationError(
                f"RepositoryQuery takes a repository class or instance, got {owner.__name__}"
            )
        self.repository: type[Any] = owner
        plan = make_plan()
        limit, offset = check_window(limit, offset)
        keys = plan.sort_keys(sort)
        self._plan = plan
        self.read = plan.read(
            specs, filters, include_deleted, keys, load, limit=limit, offset=offset
        )

    def statement(self, dialect: str) -> tuple[sa.Select[Any], dict[str, Any]]:
        """The statement for ``dialect`` ("postgresql", "sqlite") and its bound values, as the
        repository builds them (shapes reused with their values as parameters, when it does).

        Args:
            dialect: ``"postgresql"`` or ``"sqlite"``.

        Returns:
            ``(statement, params)``.
        """
        bound = getattr(self._plan, "bound_select", None)
        if bound is not None:
            statement, params = bound(self.read, dialect)
            return statement, dict(params)
        return self._plan.select(self.read, dialect), {}

    def prepared(self, connection: Connection) -> tuple[Any, dict[str, Any]]:
        """The statement after the ORM's session listeners had their say (tenant criteria),
        captured before anything is sent, with its bound values.

        Args:
            connection: The connection whose dialect and session listeners apply.

        Returns:
            ``(statement, params)``.
        """
        statement, params = self.statement(connection.dialect.name)
        session = Session(bind=connection)

        def capture(state: ORMExecuteState) -> None:
            # listened on this session only: runs after the Session class's listeners
            given = state.parameters
            raise _Captured(
                state.statement, {**params, **(given if isinstance(given, dict) else {})}
            )

        event.listen(session, "do_orm_execute", capture)
        try:
            session.execute(statement, params)
        except _Captured as captured:
            return captured.statement, captured.params
        finally:
            session.close()
        raise AssertionError("do_orm_execute was not called")  # pragma: no cover

    def __repr__(self) -> str:
        return f"RepositoryQuery({self.repository.__name__})"
