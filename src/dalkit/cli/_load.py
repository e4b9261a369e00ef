"""``module:attribute`` as the options ``--metadata``, ``--run``, ``--repository`` and
``--publisher`` take it: imported as ``python -m`` would, with the current directory first."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from dalkit.errors import ConfigurationError


def load_attribute(spec: str, option: str) -> Any:
    """The attribute ``spec`` names, from the project the command runs in.

    A console script's ``sys.path`` starts with its own ``bin`` directory, not the current
    one, so the project's modules are found only with the current directory added.

    Args:
        spec: ``module:attribute``, such as ``myapp.models:Base``.
        option: The option it was given to, for the error.

    Returns:
        The attribute.

    Raises:
        ConfigurationError: ``spec`` is not ``module:attribute``, or names a module or an
            attribute that is not there.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{option} wants module:attribute, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        # a typo in the option, not a crash
        raise ConfigurationError(f"{option} {spec}: {exc}") from None
    finally:
        sys.path.pop(0)
