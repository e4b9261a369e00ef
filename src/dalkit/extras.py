"""The error for an optional extra that is not installed, raised by a module that imports its
packages: a ConfigurationError naming the extra to install, rather than Python's
ModuleNotFoundError naming a package the user never asked for."""

from __future__ import annotations

from dalkit.errors import ConfigurationError

__all__ = ["missing_extra"]


def missing_extra(what: str, extra: str, error: ImportError) -> ConfigurationError:
    """The error to raise, from ``error``, when importing what ``extra`` brings failed.

    Args:
        what: What needs the package, as the message names it (``"dalkit.integrations.asgi"``).
        extra: The extra that brings it (``"web"``).
        error: The import's own error, which names the missing package.

    Returns:
        A ConfigurationError saying what is missing and what to install.
    """
    return ConfigurationError(
        f"{what} needs {error.name or 'a package'}, which is not installed; install it with"
        f" pip install 'dalkit[{extra}]'"
    )
