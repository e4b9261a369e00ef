"""From a DatabaseConfig to a SQLAlchemy engine with dalkit's hooks; opens no connection itself.

Shared by the sync and async databases: driver choice, per-driver connect arguments, the SQLite
pragmas and transaction fix, the init hook and the single point where driver errors are
translated (SQLAlchemy's ``handle_error`` event).
"""

from __future__ import annotations

import importlib.util
import inspect
import random
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, ExceptionContext

from dalkit.config import DatabaseConfig
from dalkit.driver_errors import is_sqlite_busy, translate_bind_error, translate_dbapi_error
from dalkit.driver_messages import mask_chain
from dalkit.engine import column_types, forking, liveness, statement_hooks
from dalkit.engine import pool as pool_metrics
from dalkit.engine.aiosqlite_connect import connect_aiosqlite, interrupt_when_cancelled
from dalkit.engine.asyncpg_query import url_connect_args
from dalkit.engine.options import (
    install_sqlite_read_only,
    is_memory_sqlite,
    memory_sqlite_pool_kwargs,
)
from dalkit.engine.pool import PoolMetrics, _InstrumentedPoolMixin, instrumented_pool_class
from dalkit.errors import ConfigurationError, DatabaseError
from dalkit.transaction.retry import backoff_delay

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "SQLITE_BEGIN_OPTION",
    "build_async_engine",
    "build_engine",
    "engine_kwargs",
    "get_async_driver_connection",
    "get_driver_connection",
    "install_hooks",
    "resolve_url",
]

#: Execution option naming the statement that opens a SQLite transaction (``BEGIN IMMEDIATE``
#: for writers, so they queue on busy_timeout instead of failing to upgrade a read lock);
#: ``None`` opens none, so each statement commits by itself (dalkit's SQLite AUTOCOMMIT).
SQLITE_BEGIN_OPTION = "dalkit_sqlite_begin"

# (backend, is_async) -> the driver dalkit picks when the URL names none
_DEFAULT_DRIVERS = {
    ("postgresql", False): "psycopg",
    ("postgresql", True): "asyncpg",
    ("sqlite", False): "pysqlite",
    ("sqlite", True): "aiosqlite",
}
# driver -> (module to import, extra that installs it, whether it is an async driver)
_DRIVERS = {
    "psycopg": ("psycopg", "postgres", None),  # psycopg serves both APIs
    "asyncpg": ("asyncpg", "postgres", True),
    "pysqlite": ("sqlite3", None, False),
    "aiosqlite": ("aiosqlite", "sqlite-async", True),
}


def resolve_url(config: DatabaseConfig, *, is_async: bool) -> URL:
    """The URL with dalkit's driver for this API filled in.

    Args:
        config: The database's configuration.
        is_async: Whether the URL is for an AsyncDatabase.

    Returns:
        ``config.url`` with a driver (psycopg or asyncpg, sqlite3 or aiosqlite by default).

    Raises:
        ConfigurationError: An unsupported database or driver, a driver of the other API, or
            a driver (or greenlet, for async) that is not installed.
    """
    url = config.url
    backend = url.get_backend_name()
    if backend == "sqlite" and url.host:
        # SQLAlchemy's own ArgumentError otherwise, raised by create_engine
        path = "/".join(part for part in (url.host, url.database) if part)
        raise ConfigurationError(
            f"a SQLite URL names its file after three slashes: sqlite:///{path} for a path "
            "relative to the current directory, sqlite:////var/data/app.db for an absolute one, "
            "sqlite:// for an in-memory database; with two, the file is read as a host name"
        )
    driver = url.get_driver_name() if "+" in url.drivername else None
    if driver is None:
        driver = _DEFAULT_DRIVERS.get((backend, is_async))
        if driver is None:
            # postgres:// is what some hosting services hand out; SQLAlchemy reads postgresql://
            hint = "; write the URL as postgresql://..." if backend == "postgres" else ""
            raise ConfigurationError(
                f"unsupported database {backend!r}: dalkit supports postgresql and sqlite URLs"
                f"{hint}"
            )
        url = url.set(drivername=f"{backend}+{driver}")
    known = _DRIVERS.get(driver)
    if known is None:
        choices = sorted(
            {f"{backend}+{d}" for (b, _), d in _DEFAULT_DRIVERS.items() if b == backend}
        )
        raise ConfigurationError(f"unknown driver {driver!r}; use one of {', '.join(choices)}")
    module, extra, async_driver = known
    if async_driver is not None and async_driver != is_async:
        api = "AsyncDatabase" if async_driver else "Database"
        raise ConfigurationError(f"driver {driver!r} only works with {api}")
    if importlib.util.find_spec(module) is None:
        hint = f"pip install 'dalkit[{extra}]'" if extra else "a Python built with sqlite3"
        raise ConfigurationError(f"the {driver} driver is not installed; install it with {hint}")
    if is_async and importlib.util.find_spec("greenlet") is None:
        raise ConfigurationError(
            "async support needs greenlet; install it with pip install 'sqlalchemy[asyncio]'"
        )
    return url


def engine_kwargs(
    config: DatabaseConfig,
    url: URL,
    pool_class: type[Any],
    url_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``create_engine``/``create_async_engine``.

    Args:
        config: The database's configuration (pool sizes, timeouts, connect arguments).
        url: The URL from `resolve_url()`.
        pool_class: The (instrumented) pool class to use.
        url_args: Connect arguments read from the URL's query (`url_connect_args()`);
            the config's own settings win over them, as they do over the query for psycopg.

    Returns:
        The keyword arguments, connect arguments included.
    """
    driver = url.get_driver_name()
    connect_args: dict[str, Any] = dict(url_args or {})
    kwargs: dict[str, Any] = {"echo": config.echo}
    timeout = ""  # psycopg's: a server setting in libpq's options
    if url.get_backend_name() == "sqlite":
        connect_args["timeout"] = config.sqlite_busy_timeout_ms / 1000.0
        if driver == "aiosqlite":  # a failed connect leaves no thread to die noisily
            connect_args["async_creator_fn"] = connect_aiosqlite
        if is_memory_sqlite(url):
            # one connection (the database lives in it), lent to one checkout at a time
            connect_args["check_same_thread"] = False
            kwargs.update(memory_sqlite_pool_kwargs(config), poolclass=pool_class)
        else:
            kwargs.update(_pool_kwargs(config), poolclass=pool_class)
    else:
        kwargs.update(_pool_kwargs(config), poolclass=pool_class)
        settings = {}
        if config.application_name:
            settings["application_name"] = config.application_name
        if config.statement_timeout_ms is not None:
            settings["statement_timeout"] = str(config.statement_timeout_ms)
        if driver == "asyncpg":
            connect_args["timeout"] = config.connect_timeout_s
            settings = {**connect_args.pop("server_settings", {}), **settings}
            if settings:
                connect_args["server_settings"] = settings
        else:
            connect_args["connect_timeout"] = max(1, round(config.connect_timeout_s))
            if config.application_name:
                connect_args["application_name"] = config.application_name
            if config.statement_timeout_ms is not None:
                timeout = f"-c statement_timeout={config.statement_timeout_ms}"
    connect_args.update(config.connect_args)
    if timeout:  # after the URL's or the caller's options, which it used to replace whole
        given = connect_args.get("options") or url.query.get("options") or ()
        given = " ".join((given,) if isinstance(given, str) else given)
        connect_args["options"] = f"{given} {timeout}".strip()
    kwargs["connect_args"] = connect_args
    return kwargs


def _pool_kwargs(config: DatabaseConfig) -> dict[str, Any]:
    return {
        "pool_size": config.pool_size,
        "max_overflow": config.max_overflow,
        "pool_timeout": config.pool_timeout,
        "pool_recycle": config.pool_recycle,
        "pool_pre_ping": False,  # dalkit's own liveness check (engine/liveness.py) replaces it
    }


def install_hooks(engine: Engine, config: DatabaseConfig, *, on_connect_error: Any = None) -> None:
    """Attach the SQLite fix, the init hook and error translation to ``engine``.

    Args:
        engine: The sync engine, also under an AsyncEngine: SQLAlchemy's events are
            synchronous, and async drivers are reached through their adapters.
        config: The database's configuration (its ``init`` hook, its secrets to scrub).
        on_connect_error: Called when a connection cannot be opened (the pool metrics count it).
    """
    column_types.install(engine)
    if engine.dialect.name == "sqlite":
        _install_sqlite(engine, config)
        if engine.dialect.driver == "aiosqlite":
            interrupt_when_cancelled(engine)
    if config.init is not None:
        _install_init(engine, config.init)

    @event.listens_for(engine, "handle_error", retval=True)
    @statement_hooks.serves_lean  # reads of the execution context only whether there is one
    def _translate(context: ExceptionContext) -> BaseException | None:
        if context.is_pre_ping:
            return None  # a failed pre-ping is handled by the pool: it reconnects
        if context.sqlalchemy_exception is None:
            original = context.original_exception
            # sqlite3: an integer past 64 bits; psycopg: a value its dumper cannot encode (a
            # set for a JSON column), where the other drivers raise a DatabaseError
            if isinstance(original, (OverflowError, TypeError)) and context.statement is not None:
                return translate_bind_error(mask_chain(original, config.scrub))
            return None
        sa_error = context.sqlalchemy_exception
        if isinstance(sa_error, DatabaseError) or not hasattr(sa_error, "orig"):
            return None
        on_connect = context.connection is None and context.execution_context is None
        if on_connect and on_connect_error is not None:
            on_connect_error()
        translated = translate_dbapi_error(
            sa_error,  # type: ignore[arg-type]
            is_disconnect=context.is_disconnect,
            on_connect=on_connect,
            sqlite_file=config.url.database if config.url.get_backend_name() == "sqlite" else None,
        )
        translated.args = (config.scrub(str(translated)),)
        mask_chain(context.original_exception, config.scrub)  # the cause a traceback prints
        return translated  # SQLAlchemy raises it from the driver's own exception


def _install_sqlite(engine: Engine, config: DatabaseConfig) -> None:
    memory = is_memory_sqlite(engine.url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # pysqlite opens transactions itself, lazily and not before DDL: take that over so a
        # rolled-back transaction really leaves nothing behind (SQLAlchemy's documented recipe)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                _use_wal(cursor, config.sqlite_busy_timeout_ms / 1000.0)
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(config.sqlite_busy_timeout_ms)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        begin = options.get(SQLITE_BEGIN_OPTION, "BEGIN")
        if begin is None or options.get("isolation_level") == "AUTOCOMMIT":
            return
        # straight to the driver: exec_driver_sql would build a whole execution context for
        # it, doubling the cost of a short SQLite transaction
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.execute(begin)
        except Exception as exc:
            # bypassing SQLAlchemy bypasses its handle_error hook too: a writer that found the
            # file locked must still raise DatabaseBusyError, which the transaction runner retries
            wrapped = sa_exc.DBAPIError.instance(
                begin, None, exc, connection.dialect.loaded_dbapi.Error
            )
            if not isinstance(wrapped, sa_exc.DBAPIError):
                raise  # not the driver's error: nothing to translate
            raise translate_dbapi_error(wrapped) from mask_chain(exc, config.scrub)
        finally:
            cursor.close()


def _use_wal(cursor: Any, timeout_s: float) -> None:
    """Put the file in WAL mode, waiting out other connections switching it at the same time.

    SQLite's busy timeout does not cover this: while another connection holds the write lock
    (a write transaction, or its own switch of a fresh file), SQLite refuses the switch at once
    ("database is locked", in 0.1 ms with a 5 s timeout) rather than wait. Measured: 3 of 200
    connections failed, four threads opening each fresh file together, and so did one of two
    ``dalkit migrate up`` processes started together in CI. A file already in WAL takes no lock
    to say so, so the mode is read first; only a switch that hit that race is retried, with the
    shared backoff, for at most the busy timeout (the sleep blocks an async loop only then).
    """
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")  # (aiosqlite's cursor returns no cursor)
            if cursor.fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            attempt += 1
            if not is_sqlite_busy(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(backoff_delay(attempt, 0.002, 0.1, 1.0, random.random()))


def _install_init(engine: Engine, init: Any) -> None:
    is_coroutine = inspect.iscoroutinefunction(init)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        if is_coroutine:
            # async drivers sit behind SQLAlchemy's adapter, which runs coroutines for us
            dbapi_connection.run_async(init)
        else:
            driver_connection = getattr(dbapi_connection, "driver_connection", dbapi_connection)
            init(driver_connection)


def build_engine(config: DatabaseConfig) -> tuple[Engine, PoolMetrics]:
    """A sync engine for ``config`` with dalkit's hooks and pool metrics installed.

    Args:
        config: The database's configuration.

    Returns:
        The engine and the metrics of its pool.

    Raises:
        ConfigurationError: See `resolve_url()`.
    """
    url = resolve_url(config, is_async=False)
    url, url_args = url_connect_args(url, config.connect_args)
    metrics = PoolMetrics(config.leak_threshold_s)
    pool_class = instrumented_pool_class(is_async=False)
    engine = create_engine(url, **engine_kwargs(config, url, pool_class, url_args))
    _install_all(engine, config, metrics)
    return engine, metrics


def build_async_engine(config: DatabaseConfig) -> tuple[AsyncEngine, PoolMetrics]:
    """An async engine for ``config`` with dalkit's hooks and pool metrics installed.

    Args:
        config: The database's configuration.

    Returns:
        The engine and the metrics of its pool.

    Raises:
        ConfigurationError: See `resolve_url()`; or a libpq URL option asyncpg cannot take.
    """
    url = resolve_url(config, is_async=True)
    url, url_args = url_connect_args(url, config.connect_args)
    metrics = PoolMetrics(config.leak_threshold_s)
    # imported here: sqlalchemy.ext.asyncio needs greenlet, which only the async extras bring
    from sqlalchemy.ext.asyncio import create_async_engine

    pool_class = instrumented_pool_class(is_async=True)
    engine = create_async_engine(url, **engine_kwargs(config, url, pool_class, url_args))
    _install_all(engine.sync_engine, config, metrics)
    return engine, metrics


def _install_all(engine: Engine, config: DatabaseConfig, metrics: PoolMetrics) -> None:
    if isinstance(engine.pool, _InstrumentedPoolMixin):
        pool_metrics.install(engine, metrics, config)
    if engine.dialect.name == "sqlite":
        install_sqlite_read_only(engine)
    install_hooks(engine, config, on_connect_error=metrics.on_connect_error)
    if config.pool_pre_ping:
        liveness.install(engine)
    statement_hooks.track(engine.dialect)  # the hooks every dalkit engine runs (audit's guard)
    forking.track(engine)  # a forked child gets a fresh pool


def get_driver_connection(connection: Connection) -> Any:
    """The driver's own connection (psycopg, sqlite3) behind a SQLAlchemy connection.

    Args:
        connection: A connection checked out of a sync engine.

    Returns:
        The psycopg or sqlite3 connection, for work SQLAlchemy does not cover (COPY).
    """
    return connection.connection.driver_connection


async def get_async_driver_connection(connection: AsyncConnection) -> Any:
    """The driver's own connection (asyncpg, psycopg, aiosqlite) behind an async connection.

    Args:
        connection: A connection checked out of an async engine.

    Returns:
        The driver's connection, for work SQLAlchemy does not cover (COPY).
    """
    return (await connection.get_raw_connection()).driver_connection
