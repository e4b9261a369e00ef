"""One rule says which names hold secrets (`dalkit.secret_names`), and every place that masks or
guards a value by its name follows it: the config's connect arguments and URL query keys, the
fields kept out of default allow-lists, the slow-query log's parameters and EXPLAIN's numbers."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import registry

from dalkit import DatabaseConfig
from dalkit.observe.plan_values import masked
from dalkit.observe.querylog import mask_parameters
from dalkit.query.fields import model_info
from dalkit.secret_names import (
    is_secret_name,
    masked_repr,
    masked_text,
    masked_values,
    text_secrets,
)

SECRET_NAMES = [
    "password",
    "sslpassword",
    "db_passwd",
    "passphrase",
    "client_SECRET",
    "ApiToken",
    "refresh_tokens",
    "credentials",
    "api_key",
    "apiKey",
    "private_key",
    "db_pass",
    "pwd",
    "auth",
    "auth_header",
    "authorization",
    "salt",
    "password_salt",
    "hash",
    "pin",
    "card_pin",
    "otp",
]
# names that hold a secret word's letters but no secret: each stays visible and filterable
PLAIN_NAMES = [
    "email",
    "author",
    "authored_by",
    "authority",
    "secretary",
    "passenger",
    "passfile",
    "bypass",
    "spin",
    "pinned",
    "shipping",
    "hashtag",
    "salted",
    "cache_key",
]
VALUE = "4815162342"
NUMBER = 987654


def _model(name: str) -> type:
    table = sa.Table(
        f"t_{name.lower()}",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(name, sa.String(50)),
    )
    model = type(f"Model_{name}", (), {})
    registry().map_imperatively(model, table)
    return model


def _shown_by_each_user(name: str) -> dict[str, bool]:
    """Where a value named ``name`` is shown (or, for the allow-list, reachable)."""
    config = DatabaseConfig.from_url("sqlite:///x.db", connect_args={name: VALUE})
    query = DatabaseConfig.from_url(f"postgresql://app@db/app?{name}={VALUE}")
    plan = masked({"Filter": f"(({name} + 1) = {NUMBER}) AND (id = 5)"})
    return {
        "config repr": VALUE in repr(config),
        "config url": VALUE in str(query.url) or VALUE in repr(query),
        "allow-list": not model_info(_model(name)).fields[name].sensitive,
        "parameter": VALUE in str(mask_parameters({name: VALUE})),
        "compared column": VALUE in str(mask_parameters({"p": VALUE}, columns={"p": name})),
        "plan": str(NUMBER) in plan["Filter"],
    }


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_every_user_of_the_rule_hides_a_secret_name(name: str) -> None:
    assert is_secret_name(name)
    assert _shown_by_each_user(name) == dict.fromkeys(_shown_by_each_user(name), False)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_no_user_of_the_rule_hides_a_plain_name(name: str) -> None:
    assert not is_secret_name(name)
    assert _shown_by_each_user(name) == dict.fromkeys(_shown_by_each_user(name), True)


def test_a_plan_masks_every_number_of_a_condition_on_a_secret_but_no_other() -> None:
    plan = masked(
        {
            "Filter": "(((pin_secret + 1) = 987654) AND (COALESCE(api_key, 0) = 42) "
            "AND (pin IS DISTINCT FROM '77'::bigint) AND (id = 5))",
            "Index Cond": "((salt)::numeric(10,2) = 3.5)",
        }
    )
    assert plan["Filter"] == (
        "(((pin_secret + ***) = ***) AND (COALESCE(api_key, ***) = ***) "
        "AND (pin IS DISTINCT FROM '***'::bigint) AND (id = 5))"
    )
    assert plan["Index Cond"] == "((salt)::numeric(10,2) = ***)"


@dataclasses.dataclass
class _Webhook:
    target: str
    headers: dict[str, str]


def test_a_secret_inside_a_text_of_an_innocent_name_is_masked_by_every_masker() -> None:
    # an outbox event's field, a row's, a filter's: a URL with a password, a libpq DSN
    event = _Webhook("https://hooks:pw_S3cr3t@example.com/in", {"upstream": "host=h password=x9"})
    shown = masked_repr(event)
    assert shown == (
        "_Webhook(target='https://hooks:***@example.com/in', headers={'upstream': "
        "'host=h password=***'})"
    )
    row = {"dsn": "postgresql://u:p@ss@db/app?sslpassword=k3y&x=1", "note": "a@b.c, x=1"}
    assert masked_values(row) == {
        "dsn": "postgresql://u:***@db/app?sslpassword=***&x=1",
        "note": "a@b.c, x=1",
    }
    assert text_secrets("host=h password='a b\\' c'") == ["'a b\\' c'", "a b' c"]
    assert masked_text("postgresql://u@db/app") == "postgresql://u@db/app"
    # a Redis URL's user part alone is where many write the password (redis-py sends it as
    # the username); a PostgreSQL URL's user alone is a role, shown
    assert masked_text("cache redis://pw@S3cr3t@cache:6379/0") == "cache redis://***@cache:6379/0"
    assert text_secrets("rediss://pw@S3cr3t@cache/0") == ["pw@S3cr3t"]
