"""Domain events Conduit stores in the transactional outbox, for a relay to publish."""

from __future__ import annotations

import dataclasses

from dalkit import DomainEvent
from dalkit.outbox import event_type


@event_type("conduit.article_published", version=1)
@dataclasses.dataclass(frozen=True, kw_only=True)
class ArticlePublished(DomainEvent):
    """An article was created: it leaves the outbox only if the request committed."""

    article_id: int
    slug: str
    author: str
    tags: tuple[str, ...] = ()
