"""A libpq multi-host URL (``host1,host2``) is rewritten to the ``?host=`` form SQLAlchemy
parses; a single host whose password holds a comma is left as it is."""

from __future__ import annotations

import pytest

from dalkit.engine.pgbouncer import split_multi_host


@pytest.mark.parametrize(
    ("url", "rewritten"),
    [
        ("postgresql://app:pw@h1:5432,h2:5433/app", "postgresql://app:pw@/app?host=h1:5432&host=h2:5433"),
        ("postgresql://h1,h2/app?target_session_attrs=read-write", "postgresql:///app?host=h1&host=h2&target_session_attrs=read-write"),
        ("postgresql://u:a,b@h1,h2/db", "postgresql://u:a,b@/db?host=h1&host=h2"),
    ],
)  # fmt: skip
def test_a_list_of_hosts_becomes_host_parameters(url: str, rewritten: str) -> None:
    assert split_multi_host(url) == (rewritten, True)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://app:se,cret@db.example:5432/app",
        "postgresql://app:a,b,c@db.example/app?sslmode=require",
        "postgresql://db.example:5432/app",
    ],
)
def test_a_comma_in_a_password_is_no_list_of_hosts(url: str) -> None:
    assert split_multi_host(url) == (url, False)
