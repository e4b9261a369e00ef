"""What `function_facts` reads from the database's functions: what each reads and writes,
following the functions it calls, unknown when its code hides it; and which calls `calls_in`
finds in a statement (none in a statement of the usual kind)."""

from __future__ import annotations

import pytest

from dalkit.cache.functions import calls_in, function_facts
from dalkit.cache.triggers import ANYTHING

RELATIONS = frozenset({"orders", "order_lines", "totals", "log"})


def test_a_function_reads_the_relations_its_code_names_and_those_of_its_callees() -> None:
    facts = function_facts(
        [
            ("order_total", "sql", "s", "SELECT sum(amount) FROM order_lines WHERE id = $1"),
            ("report", "plpgsql", "s", "BEGIN RETURN order_total(1) + (SELECT 1 FROM orders); END"),
            ("ping", "sql", "i", "SELECT 1"),
        ],
        RELATIONS,
    )
    assert dict(facts.reads) == {
        "order_total": frozenset({"order_lines"}),
        "report": frozenset({"order_lines", "orders"}),
        "ping": frozenset(),
    }
    assert facts.writes == {}


def test_a_function_writes_the_targets_of_its_statements_and_of_its_callees() -> None:
    facts = function_facts(
        [
            ("note", "sql", "v", "INSERT INTO log VALUES ($1) RETURNING true"),
            ("close", "plpgsql", "v", "BEGIN UPDATE orders SET done = true; x := note('c'); END"),
            ("loop_a", "sql", "v", "SELECT loop_b()"),  # calls each other: followed once
            ("loop_b", "sql", "v", "SELECT loop_a(); DELETE FROM totals"),
        ],
        RELATIONS,
    )
    assert facts.writes["note"] == {"log"}
    assert facts.writes["close"] == {"orders", "log"}
    assert facts.writes["loop_a"] == facts.writes["loop_b"] == {"totals"}
    assert facts.written_by(["close()", "lower()", "orders"]) == {
        "orders",
        "orders|cascades",
        "log",
        "log|cascades",
    }


@pytest.mark.parametrize(
    ("language", "volatility", "code", "writes"),
    [
        ("plpgsql", "v", "BEGIN EXECUTE format('DELETE FROM %I', $1); END", ANYTHING),
        ("plpython3u", "v", "plpy.execute('DELETE FROM log')", ANYTHING),
        ("c", "s", "my_stable_function", frozenset()),
        ("c", "v", "my_volatile_function", ANYTHING),
    ],
)
def test_a_function_whose_code_hides_its_work_reads_unknown_tables(
    language: str, volatility: str, code: str, writes: frozenset[str]
) -> None:
    facts = function_facts([("f", language, volatility, code)], RELATIONS)
    assert facts.reads["f"] is None
    assert facts.writes.get("f", frozenset()) == writes
    read, unsure = facts.read_through(("orders", "f()", "lower()"))
    assert (read, unsure) == (["orders"], {"f()"})


def test_a_function_called_for_its_effects_adds_its_writes_and_an_unknown_one_anything() -> None:
    facts = function_facts(
        [
            ("note", "sql", "v", "INSERT INTO log VALUES ($1)"),
            (
                "close",
                "plpgsql",
                "v",
                "BEGIN PERFORM note('c'); UPDATE orders SET done = true; END",
            ),
            ("ship", "plpgsql", "v", "BEGIN PERFORM dblink_exec('x', 'y'); END"),
        ],
        RELATIONS,
    )
    assert facts.writes["close"] == {"log", "orders"}
    assert facts.writes["ship"] == ANYTHING


def test_a_function_calling_one_that_answers_for_the_session_hides_what_it_reads() -> None:
    facts = function_facts(
        [("tenant", "sql", "s", "SELECT current_setting('app.tenant')")], RELATIONS
    )
    assert facts.reads["tenant"] is None


@pytest.mark.parametrize(
    ("sql", "calls"),
    [
        ("INSERT INTO items (id, title) VALUES (%(id)s, %(t)s) RETURNING items.id", set()),
        ("UPDATE items SET n = next_number('x') WHERE id IN (1, 2)", {"next_number()"}),
        ('SELECT count(*), "Tally"(1), pg_typeof(1) FROM items', {"tally()"}),
        (
            "SELECT lower(n), pg_try_advisory_lock(1), nextval('s') FROM t",
            {  # SESSION_BOUND
                "pg_try_advisory_lock()",
                "nextval()",
            },
        ),
        ("SELECT archive.run(1) WHERE EXISTS (SELECT 1)", {"run()"}),
    ],
)
def test_calls_in_finds_the_names_called(sql: str, calls: set[str]) -> None:
    assert calls_in(sql) == calls
