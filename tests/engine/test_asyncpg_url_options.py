"""libpq's URL query options (``sslmode``, ``connect_timeout``, ``application_name``,
``options``) work with AsyncDatabase (asyncpg) as they do with Database (psycopg); the ones
asyncpg has no spelling for are refused when the database is made, naming only the option."""

from __future__ import annotations

import pytest

from dalkit import AsyncDatabase, ConfigurationError, Database

QUERY = (
    "?sslmode=prefer&connect_timeout=5&application_name=from-url"
    "&options=-c%20statement_timeout%3D1234"
)
SHOW = (
    "SELECT current_setting('statement_timeout') AS st, current_setting('application_name') AS app"
)


async def test_libpq_options_reach_the_server_through_asyncpg(postgres_url: str) -> None:
    async with AsyncDatabase(postgres_url + QUERY, application_name=None) as db:
        assert await db.sql(SHOW) == [{"st": "1234ms", "app": "from-url"}]


def test_libpq_options_reach_the_server_through_psycopg(postgres_url: str) -> None:
    with Database(postgres_url + QUERY, application_name=None) as db:
        assert db.sql(SHOW) == [{"st": "1234ms", "app": "from-url"}]


async def test_the_configs_own_settings_win_over_the_url_as_with_psycopg(postgres_url: str) -> None:
    url = postgres_url + QUERY
    async with AsyncDatabase(url, application_name="cfg", statement_timeout_ms=99) as db:
        assert await db.sql(SHOW) == [{"st": "99ms", "app": "cfg"}]


@pytest.mark.parametrize(
    "query",
    ["?gssencmode=disable", "?keepalives=1", "?sslmode=sometimes", "?connect_timeout=soon",
     "?options=-Xfoo", "?sslpassword=s3cretPW"],
)  # fmt: skip
def test_an_option_asyncpg_cannot_take_is_refused_up_front(query: str) -> None:
    key = query[1:].partition("=")[0]
    with pytest.raises(ConfigurationError, match=repr(key)) as caught:
        AsyncDatabase("postgresql://app:s3cretPW@127.0.0.1:1/app" + query)
    assert "s3cretPW" not in str(caught.value)


@pytest.mark.parametrize("key", ["keepalives", "sslrootcert", "prepare_threshold"])
def test_a_connect_arg_asyncpg_cannot_take_is_refused_up_front(key: str) -> None:
    # asyncpg.connect() raised a raw TypeError at the first query
    with pytest.raises(ConfigurationError, match=repr(key)) as caught:
        AsyncDatabase(
            "postgresql://app@127.0.0.1:1/app",
            connect_args={key: "s3cretPW", "password": "s3cretPW", "timeout": 5},
        )
    assert "s3cretPW" not in str(caught.value)


async def test_asyncpg_s_own_connect_args_are_taken(postgres_url: str) -> None:
    args = {"server_settings": {"application_name": "own"}, "statement_cache_size": 10}
    async with AsyncDatabase(postgres_url, application_name=None, connect_args=args) as db:
        assert (await db.sql(SHOW))[0]["app"] == "own"


@pytest.mark.parametrize("where", ["url", "connect_args"])
def test_statement_timeout_ms_keeps_the_other_settings_of_the_options(
    postgres_url: str, where: str
) -> None:
    # psycopg's options were replaced by "-c statement_timeout=...": search_path was lost
    # silently (the URL's), or the timeout was (connect_args'); asyncpg kept both
    options = "-c search_path=app,public"
    url, connect_args = (
        (f"{postgres_url}?options=-c%20search_path%3Dapp%2Cpublic", {})
        if where == "url"
        else (postgres_url, {"options": options})
    )
    shown = "SELECT current_setting('search_path') AS sp, current_setting('statement_timeout') AS t"
    with Database(url, statement_timeout_ms=99, connect_args=connect_args) as db:
        assert db.sql(shown) == [{"sp": "app,public", "t": "99ms"}]
