"""``safety_assured(reason=...)``: the author's word that operations the linter flags are safe."""

from __future__ import annotations

import contextvars
from contextlib import ContextDecorator
from types import TracebackType

from dalkit.errors import ConfigurationError

__all__ = ["assured_reason", "safety_assured"]

_REASON: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dalkit_safety_assured", default=None
)


class safety_assured(ContextDecorator):
    """Mark operations as reviewed: as a decorator on ``upgrade``/``downgrade`` or as a
    ``with`` block around some operations. The reason is shown next to each finding it covers.

    Args:
        reason: Why the operations are safe (required, not empty).

    Raises:
        ConfigurationError: Without a reason.

    Examples:
        ```python
        @safety_assured(reason="orders is empty in every environment")
        def upgrade() -> None:
            op.drop_column("orders", "legacy_code")
        ```
    """

    def __init__(self, *, reason: str) -> None:
        if not reason or not reason.strip():
            raise ConfigurationError("safety_assured needs a reason, e.g. reason='table is empty'")
        self.reason = reason.strip()
        self._tokens: list[contextvars.Token[str | None]] = []

    def __enter__(self) -> safety_assured:
        self._tokens.append(_REASON.set(self.reason))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _REASON.reset(self._tokens.pop())


def assured_reason() -> str | None:
    """The reason of the innermost ``safety_assured`` active here, if any."""
    return _REASON.get()
