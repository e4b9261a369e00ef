"""Django's ORM as its documentation shows it for a script: settings configured in-process with
a PostgreSQL ``DATABASES`` entry (a persistent connection, autocommit), unmanaged models on the
shared tables, ``objects.get`` / ``filter().order_by()[:20]`` / ``create``. (Its ``bulk_create``
runs at a few thousand rows/s here: not timed, to keep the run within its budget.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]

from bench.peers.base import PAGE_SIZE, TABLE, Row, Target

_models: dict[str, Any] = {}


def _define_models() -> dict[str, Any]:
    """The models, defined once: Django refuses a model class before ``django.setup()`` and
    warns when one is registered twice."""
    if _models:
        return _models
    from django.db import models  # type: ignore[import-untyped]

    def model(name: str, table: str) -> Any:
        meta = type("Meta", (), {"app_label": "peers", "db_table": table, "managed": False})
        return type(
            name,
            (models.Model,),
            {
                "__module__": __name__,
                "Meta": meta,
                "id": models.AutoField(primary_key=True),
                "name": models.CharField(max_length=100),
                "email": models.CharField(max_length=100),
                "category": models.IntegerField(),
                "score": models.IntegerField(),
                "created_at": models.DateTimeField(),
            },
        )

    _models["item"] = model("DjangoItem", TABLE)
    return _models


class DjangoSync:
    label = "Django"

    def setup(self, target: Target, pool_size: int) -> None:
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": target.database,
            "USER": target.user,
            "PASSWORD": target.password,
            "HOST": target.host,
            "PORT": str(target.port),
            "CONN_MAX_AGE": None,
        }
        if not settings.configured:
            settings.configure(
                DATABASES={"default": database},
                INSTALLED_APPS=[],
                USE_TZ=False,
                DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            )
            django.setup()
        models = _define_models()
        self.Item = models["item"]

    def get(self, ident: int) -> object:
        return self.Item.objects.get(pk=ident)

    def page(self, category: int) -> Sequence[object]:
        query = self.Item.objects.filter(category=category).order_by("-created_at", "id")
        return list(query[:PAGE_SIZE])

    def insert(self, row: Row) -> object:
        return self.Item.objects.create(**row)

    def teardown(self) -> None:
        from django.db import connections

        connections.close_all()
