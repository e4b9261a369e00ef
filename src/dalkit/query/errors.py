"""Errors of the query layer that narrow dalkit's own: input refused before any SQL is built."""

from __future__ import annotations

from dalkit.errors import InvalidFilterError

__all__ = ["InputTooLongError"]


class InputTooLongError(InvalidFilterError):
    """Raised when filter or search text is longer than the repository's ``max_input_length``:
    refused up front, as a 400, before a database meets a pattern it finds too complex."""
