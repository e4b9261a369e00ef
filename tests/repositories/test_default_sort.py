"""A repository class whose ``default_sort`` names no field of its model is the class's own
mistake: its reads raise ConfigurationError naming the class, not the InvalidSortError (a
QueryInputError, the 400 of a caller's input) that a web API would have answered every
request with, blaming the caller for a sort it never sent."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from dalkit import ConfigurationError, InMemoryRepository, QueryInputError, Repository

from .models import User


class MisspeltUsers(Repository[User]):
    default_sort = "-nmae"


def test_a_default_sort_naming_no_field_is_a_configuration_error(sql_session: Session) -> None:
    for make in (lambda: MisspeltUsers(sql_session), InMemoryRepository.mirroring(MisspeltUsers)):
        with pytest.raises(ConfigurationError, match=r"MisspeltUsers\.default_sort") as raised:
            make().list()
        assert not isinstance(raised.value, QueryInputError)


def test_a_callers_sort_naming_no_field_is_still_their_input_error(sql_session: Session) -> None:
    class Users(Repository[User]):
        default_sort = "-name"

    with pytest.raises(QueryInputError):
        Users(sql_session).list(sort="-nmae")
    assert [u.name for u in Users(sql_session).list()] == []
