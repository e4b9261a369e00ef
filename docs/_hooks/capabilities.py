"""mkdocs hook: the nav's Capabilities section lists only the feature pages that exist.

Each later capability (cache, observability, migrations, web, replicas) gets its page from its
own issue; until a page lands, listing it would fail the strict build, and a page that landed
without a nav entry would fail it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECTION = "Capabilities"


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    nav: list[Any] = config["nav"] or []
    for index, entry in enumerate(nav):
        if isinstance(entry, dict) and SECTION in entry:
            pages = [page for page in entry[SECTION] if _exists(docs, page)]
            if pages:
                nav[index] = {SECTION: pages}
            else:
                del nav[index]
            break
    return config


def _exists(docs: Path, page: Any) -> bool:
    path = next(iter(page.values())) if isinstance(page, dict) else page
    return isinstance(path, str) and (docs / path).is_file()
