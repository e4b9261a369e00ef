"""DatabaseMiddleware: one dalkit transaction per HTTP request, committed before the response
starts, so that a client never receives a success for data that was not saved."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from dalkit.extras import missing_extra

try:
    import anyio
except ModuleNotFoundError as exc:  # a core install: say which extra brings it
    raise missing_extra("dalkit.integrations.asgi", "web", exc) from exc

from dalkit import (
    AsyncDatabase,
    ConfigurationError,
    Database,
    NoActiveTransactionError,
)
from dalkit.audit import ACTOR_TEXT_MAX
from dalkit.integrations import _ending
from dalkit.integrations._holders import serving
from dalkit.integrations._request import (
    HOOKS_KEY,
    STATE_KEY,
    BeforeCommit,
    Receive,
    Request,
    Scope,
    Send,
)
from dalkit.integrations.errors import ResponseStartedError
from dalkit.integrations.replica_tokens import ReplicaTokens, TokenCarrier

__all__ = [
    "STATE_KEY",
    "ASGIApp",
    "BeforeCommit",
    "DatabaseMiddleware",
    "ScopeReader",
    "before_commit",
    "rollback_on_error",
]

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI application: ``await app(scope, receive, send)``."""
ScopeReader = str | Callable[[Scope], object | None] | None
"""A header name, or a function of the ASGI scope (its ``state``, ``user``, ...), plain or
async."""
_AUTO: Any = object()


def before_commit(scope: Scope, fn: BeforeCommit) -> None:
    """Run ``fn()`` just before the request's transaction commits (not if it rolls back).

    Hooks run in registration order: for work that must end inside the transaction, such as
    a unit of work a dependency opened. With an [`AsyncDatabase`][dalkit.AsyncDatabase] a hook
    may return an awaitable, which is awaited; with a [`Database`][dalkit.Database] hooks are
    plain functions, run in the thread that then commits. A hook that raises makes the commit
    fail: the client gets a 500.

    Args:
        scope: the ASGI scope of a request running under
            [`DatabaseMiddleware`][dalkit.integrations.asgi.DatabaseMiddleware].
        fn: the hook, called without arguments.

    Raises:
        NoActiveTransactionError: when the request does not run under the middleware.
        ResponseStartedError: once the request's transaction has ended (its response
            started): from a streaming body or a background task, the hook would never run.
    """
    hooks = scope.get("state", {}).get(HOOKS_KEY)
    if hooks is None:
        raise NoActiveTransactionError(
            "before_commit() needs a request running under DatabaseMiddleware"
        )
    if isinstance(hooks, tuple):
        raise ResponseStartedError(
            "before_commit() after the request's transaction ended (its response started): "
            "the hook would never run; do the work now, in a transaction of its own"
        )
    hooks.append(fn)


def rollback_on_error(status: int) -> bool:
    """The default ``rollback_for``: a 4xx or 5xx response rolls the request's work back.

    Args:
        status: the response's HTTP status.

    Returns:
        True for a status of 400 or more.
    """
    return status >= 400


class DatabaseMiddleware:
    """Runs each HTTP request in one ``db.transaction()`` that ``current_session()``,
    repositories and units of work join.

    The transaction commits before ``http.response.start`` is passed on, or rolls back when
    ``rollback_for(status)`` says so; a commit that fails sends a problem+json 500 in place of
    the application's response. Streaming bodies run after the commit, where the request's
    session refuses further use; work after the response (background tasks) gets a transaction
    of its own. Websocket and lifespan scopes pass through untouched, and so does a request
    already running under a DatabaseMiddleware of the same database (a mounted
    sub-application with a middleware of its own): the outer one's transaction is the
    request's.

    With a sync [`Database`][dalkit.Database], sync endpoints and dependencies (run by
    Starlette and FastAPI in worker threads, one at a time) use the request's session in
    their thread, and may join its transaction (``db.transaction()``, ``UnitOfWork(db)``,
    ``db.sql()``); nothing of it runs on the event loop: COMMIT runs in a thread of the
    middleware's own.

    With read replicas, reads of the request wait for the client's own writes, even those
    another process served: a request that wrote hands its client the position of its commit
    (``db.replica_token()``) in a cookie or header, and the next request applies it
    (``db.read_your_writes(token)``).

    Args:
        app: the ASGI application.
        db: the database whose transaction each request runs in.
        rollback_for: whether a response status rolls the request's work back (a plain or
            an async function).
        actor: a request header naming the user, or a function of the ASGI scope (a plain
            or an async one); the audit log records it for every change of the request.
        request_id: the same for the request's id.
        background_transaction: give each background task a transaction of its own,
            committed as it returns (rolled back when it raises).
        commit_threads: threads committing for a sync Database; apart from the endpoints',
            so that endpoints waiting for a pooled connection never hold every thread the
            commits that would free one need.
        read_your_writes: ``"cookie"`` or ``"header"`` to carry the replica token, None for
            neither; by default ``"cookie"`` when the database has replicas.
        replica_token_name: the cookie's or header's name (``dalkit_lsn``, ``x-dalkit-lsn``).
        read_only_methods: the HTTP methods whose transactions are read-only, served by a
            replica as a whole (a request of such a method that writes fails); none by
            default, since a default transaction's reads go to a replica until it writes
            (``route_reads="auto"``, see docs/replicas.md).

    Raises:
        ConfigurationError: for a ``db`` that is not a dalkit database, or an unknown
            ``read_your_writes`` or ``actor``/``request_id``.

    Examples:
        ```python test="skip"
        app = Starlette(routes=routes, middleware=[Middleware(DatabaseMiddleware, db=db)])
        ```
    """

    def __init__(
        self,
        app: ASGIApp,
        db: Database | AsyncDatabase,
        *,
        rollback_for: Callable[[int], bool | Awaitable[bool]] = rollback_on_error,
        actor: ScopeReader = None,
        request_id: ScopeReader = "x-request-id",
        background_transaction: bool = True,
        commit_threads: int = 40,
        read_your_writes: TokenCarrier | None = _AUTO,
        replica_token_name: str | None = None,
        read_only_methods: Collection[str] | None = None,
    ) -> None:
        if not isinstance(db, Database | AsyncDatabase):
            raise ConfigurationError(
                f"DatabaseMiddleware expected a dalkit Database or AsyncDatabase, "
                f"got {type(db).__name__}"
            )
        _ending.install()
        self.app = app
        self.db = db
        self.rollback_for = rollback_for
        self.background_transaction = background_transaction
        self._actor = _reader(actor, "actor")
        self._request_id = _reader(request_id, "request_id")
        self._commit_threads = commit_threads
        self._limiter: anyio.CapacityLimiter | None = None
        replicated = "replicas" in db.get_stats()
        if read_your_writes is _AUTO:
            read_your_writes = "cookie" if replicated else None
        #: where the replica token travels (None: nowhere)
        self.replica_tokens: ReplicaTokens | None = None
        if read_your_writes is not None:
            self.replica_tokens = ReplicaTokens(read_your_writes, replica_token_name)
        if read_only_methods is None:
            read_only_methods = ()
        self.read_only_methods = frozenset(m.upper() for m in read_only_methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or serving(self.db, scope):
            await self.app(scope, receive, send)
            return
        await Request(self, scope, receive, send).run()

    def limiter(self) -> anyio.CapacityLimiter:
        """The threads that commit for a sync Database (created on first use, in the loop).

        Returns:
            Their limiter, for ``anyio.to_thread.run_sync``.
        """
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._commit_threads)
        return self._limiter

    def who(self, scope: Scope) -> tuple[object | None, object | None]:
        """The actor and request id of a request, for the audit log.

        Args:
            scope: the request's ASGI scope.

        Returns:
            ``(actor, request_id)``, each None when unknown.
        """
        return self._actor(scope), self._request_id(scope)


def _reader(spec: ScopeReader, what: str) -> Callable[[Scope], object | None]:
    if spec is None:
        return lambda scope: None
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec:
        name = spec.lower().encode("latin-1")

        def header(scope: Scope) -> object | None:
            for key, value in scope.get("headers", ()):
                if key == name:
                    # the client's text: cut to what the audit log keeps, so that a long
                    # header cannot refuse the request's writes (audit.actor() would)
                    return bytes(value[:ACTOR_TEXT_MAX]).decode("latin-1")
            return None

        return header
    raise ConfigurationError(f"{what} must be a header name, a function of the ASGI scope, or None")
