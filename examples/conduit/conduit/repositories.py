"""Conduit's repositories: the reads the API needs, each a fixed number of queries however
many rows it returns (articles come with author and tags; favourite counts, "favorited" and
"following" arrive in one query each for the whole page). Articles, their favourite counts and
the tags in use are read through the query cache (:mod:`conduit.caching`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Result
from sqlalchemy.orm import joinedload, selectinload

from conduit.models import Article, Comment, Favorite, Follow, Tag, User, article_tags
from dalkit import AsyncRepository, CursorPage, NotFoundError
from dalkit.cache import AsyncQueryCache

M = TypeVar("M")
#: a row of any shape
Row = tuple[Any, ...]

#: how long a cached read may be served at most; commits invalidate it sooner, so this bounds
#: only writes made outside the application
CACHE_TTL_S = 30.0
#: the filters the article listing accepts, as the RealWorld spec names them
ARTICLE_FILTERS = ("tag", "author", "favorited")


@dataclasses.dataclass(frozen=True)
class ArticleFilters:
    tag: str | None = None
    author: str | None = None
    favorited: str | None = None


@dataclasses.dataclass(frozen=True)
class Decorations:
    """What an article or profile looks like to one viewer."""

    favorites: dict[int, int]
    favorited: set[int]
    following: set[int]


class CachedRepository(AsyncRepository[M]):
    """A repository whose own selects go through the database's query cache as well as its
    standard reads (``cache_ttl``): :meth:`execute` in place of ``session.execute``."""

    cache_ttl: ClassVar[float | None] = CACHE_TTL_S
    #: the request's database's cache (None: the database has none), set by the dependency
    query_cache: AsyncQueryCache | None = None

    async def execute(self, statement: sa.Select[*Row]) -> Result[*Row]:
        """``session.execute(statement)``, served from the cache while no commit has written
        a table it reads (the request's own writes bypass it)."""
        result: Result[*Row]
        if self.query_cache is None:
            result = await self.session.execute(statement)
        else:
            result = await self.query_cache.cached(self.session, statement, ttl=self.cache_ttl)
        return result


async def _insert_if_absent(
    repository: AsyncRepository[Any], rows: list[dict[str, Any]], *, on: list[str]
) -> None:
    """Insert ``rows`` in one statement, keeping instead any row that holds the same ``on``
    fields already (``INSERT ... ON CONFLICT DO NOTHING``). Checking first, then inserting,
    lets two concurrent requests both find a row missing and the later insert fail as a
    duplicate (a 422), where the same request twice in a row succeeds. On PostgreSQL an insert
    that conflicts with an uncommitted row waits for its transaction to end, so in READ
    COMMITTED (the default) a read after it sees that row. Callers pass several rows sorted:
    two requests then lock the same keys in the same order, rather than deadlock."""
    await repository.upsert_many(rows, on=on, update=[])


class _Follows(AsyncRepository[Follow]):
    pass


class _Favorites(AsyncRepository[Favorite]):
    pass


class UserRepository(AsyncRepository[User]):
    filterable = ("username", "email")
    sortable = ("username", "id")

    async def by_username(self, username: str) -> User:
        user = await self.first(username=username)
        if user is None:
            raise NotFoundError("profile", username)
        return user

    async def following(self, viewer: User | None, candidates: Collection[int]) -> set[int]:
        """Which of ``candidates`` the viewer follows: one query, or none."""
        if viewer is None or not candidates:
            return set()
        rows = await self.session.scalars(
            sa.select(Follow.followed_id).where(
                Follow.follower_id == viewer.id, Follow.followed_id.in_(set(candidates))
            )
        )
        return set(rows)

    async def follow(self, follower: User, followed: User) -> None:
        """Idempotent, concurrent requests included: see :func:`_insert_if_absent`."""
        row = {"follower_id": follower.id, "followed_id": followed.id}
        await _insert_if_absent(_Follows(self.session), [row], on=list(row))

    async def unfollow(self, follower: User, followed: User) -> None:
        await self.session.execute(
            sa.delete(Follow).where(
                Follow.follower_id == follower.id, Follow.followed_id == followed.id
            )
        )


def _with_author_and_tags(statement: sa.Select[*Row]) -> sa.Select[*Row]:
    return statement.options(joinedload(Article.author), selectinload(Article.tags))


class ArticleRepository(CachedRepository[Article]):
    filterable = ("slug", "author_id", "id")
    sortable = ("created_at", "id")
    default_sort = "-created_at"
    max_page_size = 100

    async def by_slug(self, slug: str, *, load: Sequence[str] = ("author", "tags")) -> Article:
        """The article ``slug`` names, with the relationships in ``load`` (only those the
        caller reads: dalkit warns of an eager load nobody used)."""
        article = await self.first(slug=slug, load=list(load))
        if article is None:
            raise NotFoundError("article", slug)
        return article

    def _where(self, filters: ArticleFilters) -> list[sa.ColumnElement[bool]]:
        conditions: list[sa.ColumnElement[bool]] = []
        if filters.tag is not None:
            conditions.append(
                sa.exists()
                .where(article_tags.c.article_id == Article.id)
                .where(article_tags.c.tag_id == Tag.id, Tag.name == filters.tag)
            )
        if filters.author is not None:
            conditions.append(Article.author.has(User.username == filters.author))
        if filters.favorited is not None:
            conditions.append(
                sa.exists()
                .where(Favorite.article_id == Article.id)
                .where(Favorite.user_id == User.id, User.username == filters.favorited)
            )
        return conditions

    async def _page(
        self, where: Sequence[sa.ColumnElement[bool]], limit: int, offset: int
    ) -> tuple[list[Article], int]:
        """Newest first; the page and how many match in all come in one (cacheable) query."""
        statement = (
            sa.select(Article, sa.func.count().over().label("total"))
            .where(*where)
            .order_by(Article.created_at.desc(), Article.id.desc())
            .limit(limit)
            .offset(offset)
        )
        rows = (await self.execute(_with_author_and_tags(statement))).unique().all()
        if rows:
            return [row[0] for row in rows], int(rows[0][1])
        if not offset:
            return [], 0
        # a page past the end carries no count: ask for it
        total = await self.execute(sa.select(sa.func.count()).select_from(Article).where(*where))
        return [], int(total.scalar_one())

    async def listing(
        self, filters: ArticleFilters, limit: int, offset: int
    ) -> tuple[list[Article], int]:
        """A page of the newest articles matching ``filters``, and how many match in all."""
        return await self._page(self._where(filters), limit, offset)

    async def keyset(
        self, filters: ArticleFilters, limit: int, after: str | None
    ) -> CursorPage[Article]:
        """The extension to the spec: newest first, continued from a signed cursor, so a deep
        page costs what the first one costs. Filters narrow it to the matching ids (at most
        1,000: dalkit refuses longer ``in`` lists with a 400)."""
        where = self._where(filters)
        narrowed: dict[str, Any] = {}
        if where:
            ids = list(await self.session.scalars(sa.select(Article.id).where(*where)))
            if not ids:
                return CursorPage([], None, None, False)
            narrowed["id__in"] = ids
        return await self.paginate_cursor(
            limit=limit, after=after, sort="-id", load=["author", "tags"], **narrowed
        )

    async def feed(self, viewer: User, limit: int, offset: int) -> tuple[list[Article], int]:
        """Articles by the authors ``viewer`` follows, newest first."""
        followed = sa.select(Follow.followed_id).where(Follow.follower_id == viewer.id)
        return await self._page([Article.author_id.in_(followed)], limit, offset)

    async def decorations(self, articles: Sequence[Article], viewer: User | None) -> Decorations:
        """Favourite counts, what ``viewer`` favourited and whom they follow, for a page."""
        ids = [a.id for a in articles]
        if not ids:
            return Decorations({}, set(), set())
        counts = await self.execute(
            sa.select(Favorite.article_id, sa.func.count())
            .where(Favorite.article_id.in_(ids))
            .group_by(Favorite.article_id)
        )
        favorites = {article_id: int(count) for article_id, count in counts}
        favorited: set[int] = set()
        if viewer is not None:
            favorited = set(
                await self.session.scalars(
                    sa.select(Favorite.article_id).where(
                        Favorite.user_id == viewer.id, Favorite.article_id.in_(ids)
                    )
                )
            )
        users = UserRepository(self.session)
        following = await users.following(viewer, {a.author_id for a in articles})
        return Decorations(favorites, favorited, following)

    async def favorite(self, user: User, article: Article) -> None:
        """Idempotent, concurrent requests included: see :func:`_insert_if_absent`."""
        row = {"user_id": user.id, "article_id": article.id}
        await _insert_if_absent(_Favorites(self.session), [row], on=list(row))

    async def unfavorite(self, user: User, article: Article) -> None:
        await self.session.execute(
            sa.delete(Favorite).where(
                Favorite.user_id == user.id, Favorite.article_id == article.id
            )
        )


class TagRepository(CachedRepository[Tag]):
    async def named(self, names: Sequence[str]) -> list[Tag]:
        """The tags with these names, created when missing, in the order given."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        found = await self._by_name(wanted)
        missing = sorted(name for name in wanted if name not in found)
        if missing:
            # a concurrent request may be creating the same tags: the insert keeps its rows,
            # and the read after it finds every tag, whoever inserted it
            await _insert_if_absent(self, [{"name": name} for name in missing], on=["name"])
            found.update(await self._by_name(missing))
        return [found[name] for name in wanted]

    async def _by_name(self, names: Collection[str]) -> dict[str, Tag]:
        # from the database, never the query cache: a tag just created must be found
        tags = await self.session.scalars(sa.select(Tag).where(Tag.name.in_(names)))
        return {t.name: t for t in tags}

    async def in_use(self) -> list[str]:
        """The names of tags some article carries, most used first."""
        used = (
            sa.select(Tag.name)
            .join(article_tags, article_tags.c.tag_id == Tag.id)
            .group_by(Tag.id, Tag.name)
            .order_by(sa.func.count().desc(), Tag.name)
        )
        return list((await self.execute(used)).scalars())


class CommentRepository(AsyncRepository[Comment]):
    filterable = ("article_id",)
    sortable = ("created_at", "id")

    async def of_article(self, article: Article) -> list[Comment]:
        statement = (
            sa.select(Comment)
            .where(Comment.article_id == article.id)
            .order_by(Comment.created_at, Comment.id)
            .options(joinedload(Comment.author))
        )
        return list(await self.session.scalars(statement))
