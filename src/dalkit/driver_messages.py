"""What of a driver error's text a dalkit error carries: the words, the names (constraint,
table, column, type) and the SQLSTATE, never the values written or compared, which may be
secrets. PostgreSQL quotes them (``Key (email)=(a@b.c) already exists``, ``Failing row contains
(...)``, ``invalid input syntax for type integer: "tok_..."``, a ``CONTEXT`` line naming each
parameter's value); so does a driver's own refusal to encode a value (``invalid UUID 'tok_...'``).
The driver's exception, with all of it, stays the ``__cause__`` of the dalkit error."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dalkit.secret_names import MASK

__all__ = ["ServerFields", "safe_text", "server_fields"]

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
    if isinstance(err, (ValueError, TypeError)):
        return _SINGLE_QUOTED.sub(f"'{MASK}'", str(err).strip())
    return None


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
