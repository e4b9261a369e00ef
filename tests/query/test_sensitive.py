"""Sensitive columns (marked, or named like a password, secret, token or hash) stay out of
default allow-lists: user input reaches them only where a repository lists them."""

from __future__ import annotations

import pytest

from dalkit import ConfigurationError, InvalidFilterError, InvalidSortError, Spec
from dalkit.query.fields import model_info
from dalkit.query.inputs import resolve_allowed
from dalkit.query.sorting import parse_sort
from dalkit.query.specs import FilterParser

from .models import Account

INFO = model_info(Account)
COMPARABLE = [name for name, field in INFO.fields.items() if field.kind != "other"]


def test_marked_and_suggestively_named_columns_are_sensitive() -> None:
    sensitive = {name for name, field in INFO.fields.items() if field.sensitive}
    assert sensitive == {"password_hash", "ApiToken", "client_SECRET", "nickname"}


def test_a_default_allow_list_leaves_sensitive_columns_out() -> None:
    allowed = resolve_allowed("Accounts", "filterable", None, INFO, COMPARABLE)
    assert allowed == ["id", "email", "token_count", "age"]
    parser = FilterParser(INFO, allowed)
    for key in ("password_hash__startswith", "password_hash", "ApiToken", "nickname__like"):
        with pytest.raises(InvalidFilterError, match="disallowed"):
            parser.condition(key, "$2b$12$")
    sortable = {n: INFO.fields[n] for n in allowed}
    for order in ("password_hash", "-client_SECRET", "email,nickname"):
        with pytest.raises(InvalidSortError):
            parse_sort(order, sortable)


def test_a_repository_may_list_a_sensitive_column_explicitly() -> None:
    allowed = resolve_allowed("Accounts", "filterable", ["email", "ApiToken"], INFO, COMPARABLE)
    assert allowed == ["email", "ApiToken"]
    condition = FilterParser(INFO, allowed).condition("ApiToken", "abc")
    assert condition.field.name == "ApiToken"


def test_an_allow_list_naming_no_usable_column_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"Accounts\.sortable"):
        resolve_allowed("Accounts", "sortable", ["nope"], INFO, COMPARABLE)
    with pytest.raises(ConfigurationError, match="list of names"):
        resolve_allowed("Accounts", "sortable", "email", INFO, COMPARABLE)


def test_a_specs_repr_masks_the_value_of_a_secret_looking_field() -> None:
    # a spec is shown in logs and test failures: Spec(api_token='tok_...') showed the token
    spec = ~Spec(api_token="tok_4f9a8c", email="a@example.com") | Spec(password_hash__eq="x")
    assert repr(spec) == (
        "(~Spec(api_token='***', email='a@example.com') | Spec(password_hash__eq='***'))"
    )


def test_a_parsed_conditions_repr_masks_a_marked_or_secret_named_fields_value() -> None:
    # a spec knows no model, so Spec(nickname=...) shows it; once parsed against the model, the
    # conditions know the column: before, their repr showed every value, passwords' too
    parser = FilterParser(INFO, ["nickname", "ApiToken", "email"])
    parsed = Spec(nickname="Marked-Value", ApiToken="tok_4f9a8c", email="a@example.com")
    shown = repr(parsed.resolve(parser))
    assert "Marked-Value" not in shown
    assert "tok_4f9a8c" not in shown
    assert "Condition(field='nickname', op='eq', value='***')" in shown
    assert "Condition(field='email', op='eq', value='a@example.com')" in shown
