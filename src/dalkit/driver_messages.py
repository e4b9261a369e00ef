"""What of a driver error's text a dalkit error carries: the words, the names (constraint,
table, column, type) and the SQLSTATE, never the values written or compared, which may be
secrets. PostgreSQL quotes them (``Key (email)=(a@b.c) already exists``, ``Failing row contains
(...)``, ``invalid input syntax for type integer: "tok_..."``, a ``CONTEXT`` line naming each
parameter's value); so does a driver's own refusal to encode a value (``invalid UUID 'tok_...'``).
The driver's exception stays the ``__cause__`` of the dalkit error, its text masked the same way
(`mask_chain`): a printed traceback shows the chain, and would show them all; psycopg's ``diag``
keeps them for code that asks."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dalkit.secret_names import MASK

__all__ = ["ServerFields", "mask_chain", "safe_text", "server_fields"]

# a DETAIL naming a key's values: unique, foreign-key and exclusion violations
_KEY = re.compile(
    r"Key \((?P<columns>.*?)\)=\(.*\) (?P<rest>already exists|is not present in table .*"
    r"|is still referenced from table .*|conflicts with existing key \(.*)",
    re.DOTALL,
)
_FAILING_ROW = re.compile(r"Failing row contains \(.*\)", re.DOTALL)
_DOUBLE_QUOTED = re.compile(r'"(?:[^"]|"")*"')
# a Python error's quoted value; a type's name is kept ('str' object has no attribute ...)
_SINGLE_QUOTED = re.compile(r"'(?!\w+' object\b)[^']*'")
# a syntax error's token that is a literal: at or near "'hunter2'", "E'...'", "$$...$$"
_LITERAL_TOKEN = re.compile(r'(at or near )"(?:[EeBbXxNn]|[Uu]&)?[\'$].*"\Z', re.DOTALL)
# the CONTEXT lines that say where, not with what: a function's line
_WHERE = re.compile(r"^(?:PL/pgSQL|SQL) function [^\n]*? line \d+[^\n]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class ServerFields:
    """The fields of a PostgreSQL error report (psycopg's ``diag``, asyncpg's attributes).

    Attributes:
        sqlstate: The SQLSTATE code.
        primary: The primary message.
        detail: The DETAIL, if any.
        hint: The HINT, if any.
        context: The CONTEXT, if any.
        table: The table the error is about, when the server names one.
        column: The column the error is about, when the server names one.
    """

    sqlstate: str
    primary: str
    detail: str | None
    hint: str | None
    context: str | None
    table: str | None
    column: str | None


def server_fields(err: Any) -> ServerFields | None:
    """The report fields of ``err``, a psycopg or asyncpg error the server sent; else None.

    Args:
        err: A driver's exception.

    Returns:
        Its fields, or None for an error the server did not send.
    """
    diag = getattr(err, "diag", None)  # psycopg
    if diag is not None and isinstance(getattr(diag, "message_primary", None), str):
        source = diag
        names = ("message_primary", "message_detail", "message_hint")
    elif isinstance(getattr(err, "sqlstate", None), str) and isinstance(
        getattr(err, "message", None), str
    ):  # asyncpg
        source = err
        names = ("message", "detail", "hint")
    else:
        return None
    primary, detail, hint = (getattr(source, name, None) for name in names)
    return ServerFields(
        sqlstate=str(getattr(source, "sqlstate", None) or getattr(err, "sqlstate", "")),
        primary=str(primary),
        detail=detail,
        hint=hint,
        context=getattr(source, "context", None),
        table=getattr(source, "table_name", None),
        column=getattr(source, "column_name", None),
    )


def safe_text(err: Any) -> str | None:
    """The text of ``err`` without the values it quotes: a server's report rebuilt from its
    fields, a driver's refusal to encode a value (a ``ValueError``, ``TypeError``) with each
    quoted part masked; None for any other error (whose text quotes no value).

    Args:
        err: A driver's exception.

    Returns:
        The text, or None to keep the error's own.
    """
    fields = server_fields(err)
    if fields is not None:
        return _server_text(fields)
    # LookupError: SQLAlchemy's Enum refusing a value ('tok_...' is not among the defined enum
    # values), and the KeyError it is raised from, whose text is the value's repr; asyncpg's
    # client-side errors: "invalid input for query argument $1: 'tok_...' (...)"
    if isinstance(err, (ValueError, TypeError, LookupError)) or type(err).__module__.startswith(
        "asyncpg"
    ):
        return _SINGLE_QUOTED.sub(f"'{MASK}'", str(err).strip())
    return None


_E = TypeVar("_E", bound=BaseException)


def mask_chain(exc: _E, scrub: Callable[[str], str] | None = None) -> _E:
    """Mask, in place, the values quoted by ``exc`` and the exceptions chained to it (its
    ``__cause__`` and ``__context__``), which a traceback prints: a dalkit error is raised
    ``from`` them. Each keeps its type and attributes (the SQLSTATE, the constraint's name);
    its text becomes `safe_text`'s, and an error whose text quotes another's (SQLAlchemy's
    asyncpg adapter's) has that part replaced by the other's safe text.

    Args:
        exc: The driver's exception a dalkit error is raised from.
        scrub: Also applied to each text: the configuration's own secrets (a password a
            connection error quotes).

    Returns:
        ``exc``, to raise from.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(chain) < 8:
        err = todo.pop()
        # a dalkit error's text is masked where it was made; so are the ones it is raised from
        if err is None or id(err) in seen or type(err).__module__.startswith("dalkit"):
            continue
        seen.add(id(err))
        chain.append(err)
        todo += (err.__context__, err.__cause__)
    texts = [(err, _text(err)) for err in chain]
    safe = [(text, masked) for err, text in texts if (masked := safe_text(err)) is not None]
    for err, text in texts:
        masked = safe_text(err) or text
        for original, replacement in safe:
            if original:
                masked = masked.replace(original, replacement)
        if scrub is not None:
            masked = scrub(masked)
        # a detail attribute (asyncpg's, its SQLAlchemy adapter's copy) quotes the values too
        if masked != text or getattr(err, "detail", None) is not None:
            _set_text(err, masked)
    return exc


def _text(err: BaseException) -> str:
    try:
        return str(err).strip()
    except Exception:  # a broken __str__: nothing that can be masked, nothing printed either
        return ""


def _set_text(err: BaseException, text: str) -> None:
    err.args = (text,)
    for name in ("detail", "hint"):  # asyncpg's errors add them to their args in __str__
        if getattr(err, name, None) is not None:
            # a read-only attribute: no __str__ of a driver's reads one
            with contextlib.suppress(AttributeError, TypeError):
                setattr(err, name, None)


def _server_text(fields: ServerFields) -> str:
    # a data exception (class 22) quotes the value refused; other classes quote names
    data = fields.sqlstate.startswith("22")
    primary = _LITERAL_TOKEN.sub(rf'\1"{MASK}"', fields.primary)
    lines = [_DOUBLE_QUOTED.sub(f'"{MASK}"', primary) if data else primary]
    detail = fields.detail
    if detail:
        detail = _FAILING_ROW.sub(f"Failing row contains ({MASK})", detail)
        key = _KEY.fullmatch(detail.rstrip("."))
        if key is not None:
            rest = key["rest"]
            if rest.startswith("conflicts"):
                rest = f"conflicts with existing key ({key['columns']})=({MASK})"
            detail = f"Key ({key['columns']})=({MASK}) {rest}."
        elif detail.startswith("Key ("):
            detail = None
        elif data:
            detail = _DOUBLE_QUOTED.sub(f'"{MASK}"', detail)
    if detail:
        lines.append(f"DETAIL:  {detail}")
    if fields.hint:
        lines.append(f"HINT:  {fields.hint}")
    where = _WHERE.findall(fields.context or "")
    if where:
        lines.append("CONTEXT:  " + "\n".join(where))
    return "\n".join(lines)
