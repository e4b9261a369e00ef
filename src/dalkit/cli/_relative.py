"""A relative step (``-2``) as a command's argument: the parser reads a leading dash as an
option, so the command lets unknown options through to its argument and refuses here any that
is no step."""

from __future__ import annotations

import difflib

import typer

#: the context settings of a command whose argument may be ``-N``
LETS_STEPS_THROUGH = {"ignore_unknown_options": True}


def refuse_unknown_option(ctx: typer.Context, value: str) -> None:
    """Refuse ``value`` (exit 2, as the parser would) when it looks like an option and is not a
    relative step such as ``-1``: an option mistyped must not be taken as the argument.

    Args:
        ctx: The command's context (its options give the suggestions).
        value: The argument as given.

    Raises:
        typer.BadParameter: ``value`` is an option the command does not have.
    """
    if not value.startswith("-") or value[1:].isdigit():
        return
    names = [
        name
        for param in ctx.command.params
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]
    close = difflib.get_close_matches(value, names)
    hint = f" (possible options: {', '.join(close)})" if close else ""
    raise typer.BadParameter(f"no such option: {value}{hint}", ctx=ctx)
