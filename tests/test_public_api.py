"""The public surface: what ``dalkit`` exports is exactly ``__all__``, every name resolves, and
exported classes say ``dalkit.Name`` (mixins keep their defining module, documented below)."""

from __future__ import annotations

import importlib
import inspect

import dalkit

# SQLAlchemy and dataclasses evaluate these mixins' annotations in their defining module
MIXINS = {
    "Audited": "dalkit.audit",
    "HasEvents": "dalkit.outbox",
    "SoftDeleteMixin": "dalkit",
    "TenantScoped": "dalkit",
}


def test_all_is_sorted_unique_and_every_name_resolves() -> None:
    assert list(dalkit.__all__) == sorted(set(dalkit.__all__))
    for name in dalkit.__all__:
        assert getattr(dalkit, name) is not None, name


def test_every_public_attribute_of_the_package_is_in_all() -> None:
    public = {
        name
        for name, value in vars(dalkit).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        # names the package imports for itself (typing helpers) are not its surface
        and str(getattr(value, "__module__", "")).startswith("dalkit")
    }
    assert public <= set(dalkit.__all__), sorted(public - set(dalkit.__all__))


def test_exported_classes_report_the_package_users_import_them_from() -> None:
    for name in dalkit.__all__:
        value = getattr(dalkit, name)
        if not isinstance(value, type):
            continue
        if name in MIXINS:
            # documented home: the mixin is importable from there under the same name
            home = importlib.import_module(MIXINS[name])
            assert getattr(home, name) is value, name
        else:
            assert value.__module__ == "dalkit", (name, value.__module__)


def test_documented_deep_paths_keep_working() -> None:
    from dalkit.audit import actor, history, register
    from dalkit.outbox import event_type

    for documented in (history, event_type, actor, register):
        assert callable(documented)
