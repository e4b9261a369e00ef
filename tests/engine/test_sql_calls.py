"""Which functions a SQL text calls (`called`), and whether a SELECT calls only built-in ones
that act on nothing (`only_reads`): what may run before a deferred BEGIN or on a replica."""

from __future__ import annotations

import pytest

from dalkit.engine.sql_calls import called, only_reads

PLAIN = [
    "SELECT items.id, items.name FROM items WHERE items.id = %(pk_1)s::INTEGER",
    "SELECT count(*) AS count_1 FROM items WHERE lower(items.name) LIKE lower(%(p)s)",
    "SELECT EXISTS (SELECT 1 FROM items WHERE items.id IN (1, 2)) AS anon_1",
    "SELECT CAST(x AS NUMERIC(10, 2)), coalesce(a, b) FROM t WHERE (a, b) > ($1, $2)",
    "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t AS u(a, b)",
    "SELECT 'archive_orders(1)', E'it\\'s f(2)', 'a''b g(3)' FROM t",
    "SELECT $$archive_orders(1)$$, $q$it's f(2)$q$ FROM t",
    "WITH x AS (SELECT 1) SELECT * FROM x UNION (SELECT 2)",
]
ACTING = {
    "SELECT archive_orders()": {"archive_orders"},
    "SELECT set_config('app.tenant', 'a', true)": {"set_config"},
    "SELECT pg_notify('jobs', 'x')": {"pg_notify"},
    'SELECT public."Put_Item"(3)': {"put_item"},
    "SELECT nextval('s'), lower(n) FROM t": {"nextval", "lower"},
}


@pytest.mark.parametrize("sql", PLAIN)
def test_a_select_calling_only_built_in_functions_that_act_on_nothing_only_reads(sql: str) -> None:
    assert only_reads(sql)


@pytest.mark.parametrize(("sql", "names"), list(ACTING.items()))
def test_a_select_calling_any_other_function_may_act(sql: str, names: set[str]) -> None:
    assert called(sql) == names
    assert not only_reads(sql)


def test_an_insert_s_target_and_column_list_are_no_call() -> None:
    assert called("INSERT INTO items (id, name) VALUES (%(id)s, upper(%(n)s))") == {"upper"}
