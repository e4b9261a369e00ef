"""Which models are audited (`Audited`, `register()`, with their options) and who
acts (`actor()`). No I/O; capture is switched on the first time a model is audited, so a
database with no audited model pays nothing on each statement.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapper

from dalkit._codec import jsonable
from dalkit.audit.errors import AuditActorError
from dalkit.errors import ConfigurationError
from dalkit.secret_names import is_sensitive
from dalkit.tables import audit_log

__all__ = [
    "ACTOR_TEXT_MAX",
    "ENTITY_KEY_MAX",
    "REDACTED",
    "Audited",
    "ModelAudit",
    "actor",
    "current_actor",
    "recorded_actor",
    "refused_actor",
    "entity_key",
    "entity_type_name",
    "audited_generation",
    "audited_models",
    "audited_tables",
    "mapped_classes",
    "model_audit",
    "on_first_audited",
    "register",
    "table_audit",
    "table_class",
]

#: what a redacted value is recorded as: that the field changed shows, its value does not
REDACTED = "[redacted]"
"""What the audit log records instead of the value of a redacted field."""

# called once, when the first model becomes audited: capture installs itself here
_first_audited_hooks: list[Callable[[], None]] = []
_any_audited = False


def on_first_audited(fn: Callable[[], None]) -> None:
    """Run ``fn`` when the first model is audited (at once if one already is)."""
    _first_audited_hooks.append(fn)
    if _any_audited:
        fn()


def _audited_now() -> None:
    global _any_audited
    if not _any_audited:
        _any_audited = True
        for fn in _first_audited_hooks:
            fn()


# -- who acts ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Actor:
    actor_id: str | None
    request_id: str | None
    refused: str | None = None  # why the block's audited writes are refused


_actor: contextvars.ContextVar[_Actor | None] = contextvars.ContextVar(
    "dalkit_audit_actor", default=None
)


@contextlib.contextmanager
def actor(actor_id: object | None, request_id: object | None = None) -> Iterator[None]:
    """Record changes made inside the block as done by ``actor_id`` (for ``request_id``).

    A context variable: concurrent threads and asyncio tasks each keep their own actor.

    Args:
        actor_id: Who acts (stored as text); None for nobody known.
        request_id: The request the changes belong to.

    Yields:
        Nothing: the actor is set for the with-block.

    Raises:
        AuditActorError: When either, as text, is longer than the log keeps
            (`ACTOR_TEXT_MAX` characters).

    Examples:
        ```python
        with actor("user-42", request_id="req-7"), db.session() as session:
            session.add(Order(id=1))  # its audit row names user-42 and req-7
        ```
    """
    token = _actor.set(_Actor(_text(actor_id, "actor_id"), _text(request_id, "request_id")))
    try:
        yield
    finally:
        _actor.reset(token)


@contextlib.contextmanager
def refused_actor(reason: str) -> Iterator[None]:
    """Refuse each audited write inside the block with ``AuditActorError(reason)``.

    For an actor that its caller could not check up front, and that the log cannot keep (a
    web middleware's per-request actor function): the block's reads and unaudited writes go
    on, and no audited change is recorded under a wrong or cut name.

    Args:
        reason: The error's message.

    Yields:
        Nothing: the refusal holds for the with-block.
    """
    token = _actor.set(_Actor(None, None, reason))
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> tuple[str | None, str | None]:
    """``(actor_id, request_id)`` that changes made now are recorded with."""
    who = _actor.get()
    return (None, None) if who is None else (who.actor_id, who.request_id)


def recorded_actor() -> tuple[str | None, str | None]:
    """`current_actor()` for an audit row being written: raises `AuditActorError` inside a
    `refused_actor()` block."""
    who = _actor.get()
    if who is None:
        return (None, None)
    if who.refused is not None:
        raise AuditActorError(who.refused)
    return (who.actor_id, who.request_id)


#: the longest actor or request id the audit log keeps (its columns' width)
ACTOR_TEXT_MAX: int = audit_log.c.actor_id.type.length  # type: ignore[attr-defined]


def _text(value: object | None, what: str) -> str | None:
    if value is None:
        return None
    text = str(value)
    if len(text) > ACTOR_TEXT_MAX:
        # PostgreSQL refuses it at the audit row's INSERT, failing every audited write of the
        # block; SQLite would keep it whole. Its value may be a client's: not repeated here
        raise AuditActorError(
            f"{what} is {len(text):,} characters long; the audit log keeps at most {ACTOR_TEXT_MAX}"
        )
    return text


# -- which models ------------------------------------------------------------------------------
class Audited:
    """Mix into a declarative model to record its creates, updates and deletes.

    ``audit_exclude`` names fields never recorded (not even that they changed);
    ``audit_redact`` names fields recorded as changed with their values hidden, as those of a
    sensitive column always are (`dalkit.secret_names.is_sensitive`: ``api_token``...);
    ``audit_name`` is the entity type written to the log (default: the class name).
    """

    audit_exclude: ClassVar[Collection[str]] = frozenset()
    audit_redact: ClassVar[Collection[str]] = frozenset()
    audit_name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _audited_classes.append(cls)
        _audited_now()


@dataclasses.dataclass(frozen=True)
class ModelAudit:
    """The audit settings of one model: its name in the log and the fields recorded."""

    name: str
    fields: tuple[tuple[str, sa.ColumnElement[Any]], ...]  # (attribute key, column)
    primary_key: tuple[str, ...]
    redact: frozenset[str]
    #: the attribute keys of ``fields``: read several times in every flush, so built once
    keys: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(key for key, _ in self.fields))

    def select(self) -> sa.Select[Any]:
        """Every recorded field, labelled by its attribute key."""
        return sa.select(*(column.label(key) for key, column in self.fields))

    def key_of(self, row: Mapping[Any, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in self.primary_key)


_registered: dict[type[Any], tuple[str | None, frozenset[str], frozenset[str]]] = {}
_configs: dict[type[Any], ModelAudit | None] = {}
# every class made audited, and what each table maps to: Core statements name tables only
_audited_classes: list[type[Any]] = []
_by_table: dict[sa.Table, ModelAudit | None] = {}


def register(
    model: type[Any],
    *,
    exclude: Collection[str] = (),
    redact: Collection[str] = (),
    name: str | None = None,
) -> None:
    """Audit ``model`` (and its subclasses) without the mixin, with the same options.

    Args:
        model: A mapped class.
        exclude: Fields never recorded (not even that they changed).
        redact: Fields recorded as changed, with `REDACTED` for the values (a sensitive
            column's always are, as with the mixin).
        name: The model's name in the log (default: the class's name).

    Raises:
        ConfigurationError: When ``exclude`` or ``redact`` is a string, not a collection, or
            ``name`` is longer than the log keeps (`ENTITY_KEY_MAX` characters).
    """
    if isinstance(exclude, str) or isinstance(redact, str):
        raise ConfigurationError("exclude and redact take collections of field names")
    if name is not None:
        _check_name(model, name)
    _registered[model] = (name, frozenset(exclude), frozenset(redact))
    _audited_classes.append(model)
    _configs.clear()
    _by_table.clear()
    _audited_now()


def model_audit(cls: type[Any]) -> ModelAudit | None:
    """The audit settings of ``cls``, or None when it is not audited; cached per class."""
    try:
        return _configs[cls]
    except KeyError:
        pass
    found: ModelAudit | None = None
    options = next((_registered[k] for k in cls.__mro__ if k in _registered), None)
    if options is None and issubclass(cls, Audited):
        options = (cls.audit_name, frozenset(cls.audit_exclude), frozenset(cls.audit_redact))
    if options is not None:
        found = _build(cls, *options)
    _configs[cls] = found
    return found


def mapped_classes(roots: Sequence[type[Any]]) -> list[type[Any]]:
    """``roots`` and their subclasses that are mapped, each once."""
    found: dict[type[Any], None] = {}
    pending = list(roots)
    while pending:
        cls = pending.pop()
        if cls in found:
            continue
        if sa.inspect(cls, raiseerr=False) is not None:
            found[cls] = None
        pending.extend(cls.__subclasses__())
    return list(found)


def table_class(table: object, classes: Sequence[type[Any]]) -> type[Any] | None:
    """The class among ``classes`` mapping ``table`` itself (the base of an inheritance that
    shares it), or None."""
    for cls in classes:
        mapper: Mapper[Any] = sa.inspect(cls)
        inherited = mapper.inherits is not None and mapper.inherits.local_table is table
        if mapper.local_table is table and not inherited:
            return cls
    return None


def table_audit(table: object) -> ModelAudit | None:
    """The audit settings of the model mapping ``table``, or None when it maps no audited one."""
    if not isinstance(table, sa.Table):
        return None
    plain = table._deannotate() if hasattr(table, "_deannotate") else table
    try:
        return _by_table[plain]
    except KeyError:
        pass
    cls = table_class(plain, mapped_classes(_audited_classes))
    found = None if cls is None else model_audit(cls)
    _by_table[plain] = found
    return found


def audited_generation() -> int:
    """A number that grows each time a model becomes audited (for caches of what is)."""
    return len(_audited_classes)


def audited_models() -> list[type[Any]]:
    """Every audited model mapped so far (and its mapped subclasses)."""
    return mapped_classes(_audited_classes)


def audited_tables() -> list[sa.Table]:
    """The tables of every audited model mapped so far."""
    tables: dict[sa.Table, None] = {}
    for cls in mapped_classes(_audited_classes):
        table = sa.inspect(cls).local_table
        if isinstance(table, sa.Table) and model_audit(cls) is not None:
            tables[table] = None
    return list(tables)


def entity_type_name(entity_type: type[Any] | str) -> str:
    """The ``entity_type`` the log records for an audited model.

    Args:
        entity_type: An audited model, or a name (which passes through).

    Returns:
        The name.
    """
    if isinstance(entity_type, str):
        return entity_type
    config = model_audit(entity_type)
    if config is None:
        raise ConfigurationError(f"{entity_type.__name__} is not audited")
    return config.name


def _build(
    cls: type[Any], name: str | None, exclude: frozenset[str], redact: frozenset[str]
) -> ModelAudit:
    mapper: Mapper[Any] = sa.inspect(cls)
    keys = [prop.key for prop in mapper.column_attrs]
    unknown = sorted((exclude | redact) - set(keys))
    if unknown:
        raise ConfigurationError(
            f"{cls.__name__} audit options name unknown field(s) {', '.join(unknown)}"
        )
    _check_name(cls, name or cls.__name__)
    primary = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    fields = tuple(
        (prop.key, prop.columns[0])
        for prop in mapper.column_attrs
        if prop.key not in exclude or prop.key in primary
    )
    # a secret's column (the rule the logs mask by) is redacted unasked; not a key: entity_id
    hide = {k for k, c in fields if is_sensitive(getattr(c, "info", {}), k, getattr(c, "name", k))}
    return ModelAudit(name or cls.__name__, fields, primary, redact | (hide - set(primary)))


def _check_name(cls: type[Any], name: str) -> None:
    if len(name) > ENTITY_KEY_MAX:  # PostgreSQL would refuse each of its audit rows
        raise ConfigurationError(
            f"{cls.__name__}'s audit name is {len(name):,} characters long; the audit log "
            f"keeps at most {ENTITY_KEY_MAX}"
        )


# -- what is written ---------------------------------------------------------------------------
#: the longest ``entity_id`` the log keeps (its column's width)
ENTITY_KEY_MAX: int = audit_log.c.entity_id.type.length  # type: ignore[attr-defined]
_DIGEST = "~sha256:"


def entity_key(values: Sequence[Any]) -> str:
    """The ``entity_id`` the log records for a primary key.

    A key whose text is longer than the log keeps (`ENTITY_KEY_MAX` characters: a long natural
    key, a composite one) is recorded as its beginning followed by ``~sha256:`` and the
    SHA-256 of the whole text: it fits, and the same key always gives the same text, so
    ``history()`` finds it.

    Args:
        values: The primary key's values, in column order.

    Returns:
        The value as text, or a JSON list when composite.
    """
    if len(values) == 1:
        text = str(jsonable(values[0]))
    else:
        text = json.dumps([jsonable(v) for v in values])
    if len(text) <= ENTITY_KEY_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text[: ENTITY_KEY_MAX - len(_DIGEST) - len(digest)] + _DIGEST + digest
