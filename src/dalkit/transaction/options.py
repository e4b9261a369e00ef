"""What a transaction is asked to be: isolation level, read-only, propagation, and the engine
execution options that mean it on each dialect. No I/O.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal, get_args

from dalkit.engine.build import SQLITE_BEGIN_OPTION
from dalkit.engine.options import SQLITE_QUERY_ONLY_OPTION
from dalkit.errors import ConfigurationError, TransactionError

__all__ = [
    "IsolationLevel",
    "Propagation",
    "TransactionOptions",
]

IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "AUTOCOMMIT"]
Propagation = Literal["required", "nested", "requires_new"]

_ISOLATION_LEVELS: tuple[str, ...] = get_args(IsolationLevel)
_PROPAGATIONS: tuple[str, ...] = get_args(Propagation)


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionOptions:
    """Validated options of one transaction (or of every call of a ``@transactional``).

    On SQLite every transaction is serializable, so the three PostgreSQL level names are
    accepted there and change nothing; ``AUTOCOMMIT`` skips ``BEGIN``; a writing transaction
    starts with ``BEGIN IMMEDIATE`` so it queues for the write lock up front instead of failing
    to upgrade a read lock later (SQLITE_BUSY_SNAPSHOT), and ``read_only`` keeps the deferred
    ``BEGIN`` that lets readers run beside a writer.

    Under ``AUTOCOMMIT`` each statement commits by itself: nothing is rolled back, and a retried
    function runs its statements again, so retry only idempotent ones (reads, typically).
    ``read_only`` with ``AUTOCOMMIT`` refuses writes too: on PostgreSQL it runs as a read-only
    READ COMMITTED transaction (which reads what autocommit statements would), on SQLite under
    ``PRAGMA query_only``.
    """

    isolation: str | None = None
    read_only: bool = False
    propagation: str = "required"
    #: db.sql()'s: one statement, which may join an AUTOCOMMIT transaction (see runs_apart)
    #: and a read-only one, which refuses it if it writes (ReadOnlyTransactionError)
    one_statement: bool = False
    #: The name transaction_stats() files this transaction under; a field rather than a
    #: property because the runner reads it on every transaction.
    stats_key: str = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats_key", self.isolation or "DEFAULT")

    @classmethod
    def build(cls, isolation: str | None, read_only: bool, propagation: str) -> TransactionOptions:
        """Options with ``isolation`` normalised (``"repeatable_read"`` works too)."""
        try:
            return _built(isolation, read_only, propagation)
        except TypeError:  # unhashable arguments: let validation say what is wrong
            return cls._validate(isolation, read_only, propagation)

    @classmethod
    def _validate(
        cls, isolation: str | None, read_only: bool, propagation: str
    ) -> TransactionOptions:
        level = None
        if isolation is not None:
            level = str(isolation).upper().replace("_", " ").strip()
            if level not in _ISOLATION_LEVELS:
                raise ConfigurationError(
                    f"unknown isolation level {isolation!r}; use one of "
                    f"{', '.join(_ISOLATION_LEVELS)}, or None for the database's default"
                )
        if propagation not in _PROPAGATIONS:
            raise ConfigurationError(
                f"unknown propagation {propagation!r}; use one of {', '.join(_PROPAGATIONS)}"
            )
        return cls(level, bool(read_only), propagation)

    @property
    def autocommit(self) -> bool:
        return self.isolation == "AUTOCOMMIT"

    def execution_options(self, dialect_name: str) -> dict[str, Any]:
        """Engine execution options that give a connection these characteristics."""
        if dialect_name == "sqlite":
            # SQLAlchemy's isolation_level option would hand pysqlite its own transaction
            # handling back when the connection is reset; dalkit's BEGIN hook does it instead
            if self.autocommit:
                if self.read_only:  # the pragma holds outside a transaction too
                    return {SQLITE_BEGIN_OPTION: None, SQLITE_QUERY_ONLY_OPTION: True}
                return {SQLITE_BEGIN_OPTION: None}
            if self.read_only:
                return {SQLITE_QUERY_ONLY_OPTION: True}
            return {SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"}
        options: dict[str, Any] = {}
        isolation = self.isolation
        if self.read_only and dialect_name == "postgresql":
            options["postgresql_readonly"] = True
            if self.autocommit:
                # PostgreSQL refuses writes only in a transaction begun READ ONLY. Nothing such a
                # transaction sends is written, and at READ COMMITTED each statement reads its
                # own snapshot: it reads what autocommit statements would
                isolation = "READ COMMITTED"
        if isolation is not None:
            options["isolation_level"] = isolation
        return options

    def runs_apart(self, outer: TransactionOptions) -> bool:
        """Whether these options, asking to join ``outer`` (``"required"``), get a transaction
        of their own instead: inside AUTOCOMMIT, whose statements each commit at once, a joined
        transaction could roll nothing back. An AUTOCOMMIT one, and db.sql()'s one statement
        (``CREATE INDEX CONCURRENTLY`` must run outside a transaction block), still join."""
        return (
            outer.autocommit
            and self.propagation == "required"
            and not (self.autocommit or self.one_statement)
        )

    def check_joinable(self, outer: TransactionOptions) -> None:
        """Refuse to join (or nest in) ``outer`` when it cannot give what these options ask."""
        if self.isolation is not None and self.isolation != outer.isolation:
            raise TransactionError(
                f"cannot join a {outer.isolation or 'default'} transaction at "
                f"{self.isolation}: use propagation='requires_new' for a transaction of its own"
            )
        if outer.read_only and not (self.read_only or self.one_statement):
            raise TransactionError(
                "cannot write inside a read-only transaction: use propagation='requires_new'"
            )
        if outer.autocommit and self.propagation == "nested":
            # PostgreSQL refuses a SAVEPOINT outside a transaction block; SQLite would begin one
            raise TransactionError(
                "cannot open a savepoint in an AUTOCOMMIT transaction (propagation='nested', or "
                "the one a unit of work opens inside a transaction), which has no transaction "
                "block to roll back to: open a transaction of its own there (db.transaction(), "
                "which does not join AUTOCOMMIT) and put the savepoint or unit of work in it"
            )


#: what a transaction gets when it asks for nothing in particular
DEFAULT_OPTIONS = TransactionOptions()
#: db.sql()'s: the defaults, but joining an AUTOCOMMIT transaction around it
ONE_STATEMENT_OPTIONS = TransactionOptions(one_statement=True)


# every db.transaction(...) call builds its options: a handful of combinations ever occur
@functools.lru_cache(maxsize=64)
def _built(isolation: str | None, read_only: bool, propagation: str) -> TransactionOptions:
    return TransactionOptions._validate(isolation, read_only, propagation)
