"""The Session class of the sessions dalkit opens: SQLAlchemy's own, except that what it finds
in the identity map for ``get()`` or a lazy many-to-one load is checked before it is returned,
that ``commit()`` first runs the registered commit checks (the transaction runner's refuses
a commit inside the block or function that owns the transaction), and that a session used
again after a failed flush rolled its transaction back, or after its connection was lost in a
savepoint whose error was caught, raises TransactionAbortedError.

SQLAlchemy answers those two from the identity map without a statement, so nothing that scopes
statements (``do_orm_execute``) sees them. A feature whose reads depend on the context
registers a check here (tenant scoping does: an object loaded inside ``tenant("a")`` is no
answer inside ``tenant("b")`` of the same session). When a check refuses the object, the
lookup finds nothing and SQLAlchemy reads the database instead, as it does for a key it has not
seen, and the feature's statement scoping decides what that read returns. The engine knows
nothing of the features: they register their checks when they are installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm import LoaderCallableStatus, Session

from dalkit.errors import ConnectionLostError, TransactionAbortedError

__all__ = [
    "CommitCheck",
    "DalkitSession",
    "IdentityCheck",
    "add_commit_check",
    "add_identity_check",
    "add_rollback_hook",
    "admitted",
]

#: True when an object found in the identity map may be returned in the current context
IdentityCheck = Callable[[object], bool]
#: called with the session before its ``commit()``; refuses the commit by raising
CommitCheck = Callable[[Session], None]

_checks: list[IdentityCheck] = []
_commit_checks: list[CommitCheck] = []
_LOST = "the connection of this transaction was lost"
#: called with the session after its ``rollback()`` (the transaction runner's marks a
#: transaction rolled back under the block or function that owns it)
_rollback_hooks: list[CommitCheck] = []


def add_rollback_hook(hook: CommitCheck) -> None:
    """Have every `DalkitSession` ``rollback()`` (``AsyncSession.rollback()`` included) call
    ``hook`` after it (registered once however often it is added)."""
    if hook not in _rollback_hooks:
        _rollback_hooks.append(hook)


def add_commit_check(check: CommitCheck) -> None:
    """Have every `DalkitSession` ``commit()`` (``AsyncSession.commit()`` included) call
    ``check`` first (registered once however often it is added)."""
    if check not in _commit_checks:
        _commit_checks.append(check)


def add_identity_check(check: IdentityCheck) -> None:
    """Have every `DalkitSession` identity-map lookup run ``check`` on the object it finds
    (registered once however often it is added)."""
    if check not in _checks:
        _checks.append(check)


def admitted(instance: object) -> bool:
    """Whether every registered check lets ``instance``, found in an identity map, be the
    answer in the current context (the repositories' own identity-map reads ask this too)."""
    return all(check(instance) for check in _checks)


class DalkitSession(Session):
    """A ``Session`` whose identity-map lookups run the registered identity checks: those of
    ``get()`` (and so ``get_one()`` and ``AsyncSession.get()``) and of a lazy
    many-to-one load, which SQLAlchemy answers from the identity map too."""

    # SQLAlchemy routes both lookups through this method and documents it as the one a
    # subclass overrides for its own identity rules (its horizontal sharding extension does)
    def _identity_lookup(
        self, mapper: Any, primary_key_identity: Any, *args: Any, **kw: Any
    ) -> Any:
        found = super()._identity_lookup(mapper, primary_key_identity, *args, **kw)
        if found is None or isinstance(found, LoaderCallableStatus) or admitted(found):
            return found
        return None  # not here: the caller reads the database, under the context's scoping

    def commit(self) -> None:
        """Run the registered commit checks, then commit as SQLAlchemy does."""
        for check in _commit_checks:
            check(self)
        try:
            super().commit()
        except PendingRollbackError as error:
            if self._flush_error(None) is None and self._lost_connection():
                raise _lost() from ConnectionLostError(_LOST)  # not SQLAlchemy's refusal
            raise self._aborted(error) from self._flush_error(error)

    def rollback(self) -> None:
        """Roll back as SQLAlchemy does, then call the registered rollback hooks."""
        super().rollback()
        for hook in _rollback_hooks:
            hook(self)

    # -- a transaction a failed flush rolled back: TransactionAbortedError, not SQLAlchemy's
    # PendingRollbackError. Statements (execute, get, connection(), lazy loads) reach the
    # connection through _connection_for_bind; a flush (the ORM's, or a plain insert) finds its
    # transaction through _autobegin_t; begin_nested() goes through begin(). Session.flush itself
    # is left alone: dalkit's plain inserts take the ORM's way for a class that overrides it
    def _connection_for_bind(self, engine: Any, execution_options: Any = None, **kw: Any) -> Any:
        try:
            connection = super()._connection_for_bind(engine, execution_options, **kw)
        except PendingRollbackError as error:
            raise self._aborted(error) from self._flush_error(error)
        if connection.invalidated and connection.in_transaction():
            # lost, and the error caught (in a savepoint, say): the transaction went with it
            raise _lost() from ConnectionLostError(_LOST)
        return connection

    def _autobegin_t(self, begin: bool = False) -> Any:
        transaction = super()._autobegin_t(begin)
        if not transaction.is_active:
            failed = self._flush_error(None)
            if failed is not None:
                raise self._aborted(failed) from failed
        elif transaction._connections and self._lost_connection():  # a flush, after a loss
            raise _lost() from ConnectionLostError(_LOST)
        return transaction

    def begin(self, nested: bool = False) -> Any:
        """Begin as SQLAlchemy does (``begin_nested()`` comes here too), in a transaction that
        no failed flush rolled back.

        Args:
            nested: Begin a savepoint.

        Returns:
            SQLAlchemy's SessionTransaction.

        Raises:
            TransactionAbortedError: When an earlier flush failed: the transaction is over.
        """
        try:
            return super().begin(nested)
        except PendingRollbackError as error:
            raise self._aborted(error) from self._flush_error(error)

    def _lost_connection(self) -> bool:
        """Whether a connection of the session's transaction broke (the transaction with it)."""
        transaction = self._transaction
        connections = transaction._connections.values() if transaction is not None else ()
        return any(connection.invalidated for connection, *_ in connections)

    def _flush_error(self, error: BaseException | None) -> Any:
        """The failure of the flush that rolled the transaction back (else ``error``)."""
        transaction = self._transaction
        while transaction is not None:
            failed = getattr(transaction, "_rollback_exception", None)
            if isinstance(failed, BaseException):
                return failed
            transaction = transaction.parent
        return error

    def _aborted(self, error: BaseException) -> TransactionAbortedError:
        failed = type(self._flush_error(error)).__name__
        return TransactionAbortedError(
            f"a flush of this transaction failed ({failed}), which rolled the transaction (or "
            "the savepoint it ran in) back: nothing more can run in it. Let its block or "
            "function end and run the work again in a new transaction; to carry on after a "
            "write that may fail, make it in a savepoint (propagation='nested'), which rolls "
            "back alone"
        )


def _lost() -> TransactionAbortedError:
    """The refusal to go on in a transaction whose connection broke, raised ``from`` a
    ConnectionLostError: a transaction function is retried as for the loss itself."""
    return TransactionAbortedError(
        "the connection of this transaction was lost (its ConnectionLostError, raised in "
        "the transaction or in a savepoint of it, was caught), which ended the whole "
        "transaction: nothing more can run in it. Let its block or function end and run the "
        "work again in a new transaction"
    )
