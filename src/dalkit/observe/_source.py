"""Which line of application code caused a statement: the innermost frame outside dalkit,
SQLAlchemy and the standard library, across SQLAlchemy's async greenlet bridge."""

from __future__ import annotations

import os
import sys
import sysconfig
from types import FrameType

import sqlalchemy

__all__ = ["caller_location"]

_SKIPPED_DIRS = (
    # dalkit's own directory: this file sits in dalkit/observe/
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(sqlalchemy.__file__ or "") + os.sep,
    sysconfig.get_paths()["stdlib"] + os.sep,
)


def _first_outside(frame: FrameType | None) -> tuple[str, int] | None:
    while frame is not None:
        filename = frame.f_code.co_filename
        # "<sqlalchemy generated ...>": code SQLAlchemy compiles for itself
        if (
            not filename.startswith(_SKIPPED_DIRS)
            and not filename.startswith("<sqlalchemy")
            and "greenlet" not in filename
        ):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def caller_location() -> tuple[str, int] | None:
    """``(filename, line)`` of the application code running now, or None if none is found.

    Frames are walked with ``sys._getframe`` rather than ``traceback``, which would read source
    files; under asyncio the statement runs in a greenlet whose stack ends at SQLAlchemy's
    bridge, and the awaiting coroutines are in the suspended parent greenlet.
    """
    found = _first_outside(sys._getframe(1))
    if found is not None:
        return found
    try:
        import greenlet  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    parent = greenlet.getcurrent().parent
    return _first_outside(parent.gr_frame if parent is not None else None)


def format_location(location: tuple[str, int] | None) -> str:
    """``path:line``, the path relative to the current directory when inside it.

    Args:
        location: ``(filename, line)``, or None.

    Returns:
        The text, or ``"unknown"`` for None.
    """
    if location is None:
        return "unknown"
    filename, line = location
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        relative = filename
    return f"{filename if relative.startswith('..') else relative}:{line}"
