"""The functions a statement calls, and which of them only read: what decides whether a
``SELECT`` may run where a write must not (before a deferred BEGIN, `dalkit.transaction.deferred`;
on a replica, `dalkit.engine.autoroute`), and which of the database's functions the query cache
follows (`dalkit.cache.functions`).

A ``SELECT`` can write: ``SELECT archive_orders()`` runs a function that inserts and deletes,
``SELECT set_config('app.tenant', 'a', true)`` sets what the rest of the transaction sees,
``SELECT pg_notify(...)`` is delivered at COMMIT, and never if the transaction rolls back. Only
calls of the built-in functions in `READ_ONLY_FUNCTIONS` leave a ``SELECT`` a plain read.
`SESSION_BOUND` lists the built-in ones whose result no cache may serve.

Written by hand: SQLAlchemy compiles a statement to text, and no library lists the functions a
SQL text calls; a regular expression over the text is enough, since a name it takes for a call
wrongly (a type's ``numeric(10, 2)``) only makes the statement count as one that may write.
"""

from __future__ import annotations

import re

from dalkit.engine.sql_literals import mask_strings

__all__ = ["READ_ONLY_FUNCTIONS", "SESSION_BOUND", "called", "only_reads"]

# a name followed by "(": a call, or a table's column list (INSERT INTO t (a, b)), an alias's
# (AS m(a, b)), a keyword (VALUES (...)), a type (numeric(10, 2)); keywords and the names after
# INTO and AS are left out
_CALLED = re.compile(
    r'(?:\b(into|as)\s+)?(?:"((?:[^"]|"")+)"|([A-Za-z_][\w$]*))\s*\(', re.IGNORECASE
)
_KEYWORDS = frozenset(
    {"values", "in", "exists", "any", "all", "some", "not", "and", "or", "as", "on", "using"}
    | {"over", "filter", "within", "cast", "lateral", "row", "array", "when", "then", "else"}
    | {"select", "where", "set", "from", "join", "returning", "by", "case", "between", "like"}
    | {"ilike", "to", "union", "except", "intersect", "limit", "offset", "sets", "rollup"}
    | {"cube", "overlaps", "is", "distinct", "with", "recursive", "group", "having", "order"}
)
#: built-in functions (and type names, which a cast spells the same way) that write nothing and
#: act on nothing: a SELECT calling only these is a plain read
READ_ONLY_FUNCTIONS = frozenset(
    {"count", "sum", "min", "max", "avg", "coalesce", "nullif", "lower", "upper", "length"}
    | {"char_length", "trim", "btrim", "ltrim", "rtrim", "abs", "round", "floor", "ceil"}
    | {"greatest", "least", "concat", "concat_ws", "substr", "substring", "replace", "left"}
    | {"right", "position", "strpos", "split_part", "regexp_replace", "format", "md5"}
    | {"now", "current_timestamp", "current_date", "localtimestamp", "date_trunc", "extract"}
    | {"date_part", "to_char", "to_date", "to_timestamp", "age", "make_interval", "timezone"}
    | {"array_agg", "string_agg", "json_agg", "jsonb_agg", "json_build_object"}
    | {"jsonb_build_object", "json_build_array", "jsonb_build_array", "to_json", "to_jsonb"}
    | {"row_to_json", "json_object_agg", "jsonb_object_agg", "jsonb_array_elements"}
    | {"json_array_elements", "jsonb_array_length", "jsonb_typeof", "jsonb_extract_path"}
    | {"array_length", "cardinality", "unnest", "generate_series", "array_to_string"}
    | {"string_to_array", "regexp_match", "regexp_matches", "pragma_foreign_key_list"}
    | {"bool_and", "bool_or", "every", "row_number", "rank", "dense_rank"}
    | {"lag", "lead", "first_value", "last_value", "ntile", "percent_rank", "cume_dist"}
    | {"percentile_cont", "percentile_disc", "mode", "stddev", "variance"}
    | {"pg_is_in_recovery", "pg_last_wal_replay_lsn", "pg_last_wal_receive_lsn"}
    | {"pg_current_wal_lsn", "pg_current_wal_insert_lsn", "version", "current_schema", "chr"}
    | {"pg_table_is_visible", "format_type", "pg_get_expr", "pg_get_constraintdef"}
    | {"pg_get_indexdef", "pg_get_viewdef", "pg_get_functiondef", "pg_relation_is_updatable"}
    | {"varchar", "char", "character", "numeric", "decimal", "timestamp", "time", "interval"}
    | {"bit", "varbit", "float", "double", "datetime", "strftime", "julianday", "date"}
    | {"ifnull", "iif", "instr", "printf", "typeof", "json_extract", "json_object"}
)
#: built-in functions whose result no cache may serve: they act (advance a sequence, take an
#: advisory lock, notify, set a setting) or answer for the session, not the data (its
#: settings, which a tenant's scoping reads, its sequences' last values, its backend and its
#: transaction); PostgreSQL's, then SQLite's. A cached read calling one goes to the database
#: (dalkit.cache.functions).
SESSION_BOUND = frozenset(
    {"nextval", "setval", "currval", "lastval", "set_config", "current_setting"}
    | {"pg_notify", "pg_backend_pid"}
    | {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock"}
    | {"pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"}
    | {"pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock"}
    | {"pg_advisory_unlock_shared", "pg_advisory_unlock_all", "txid_current"}
    | {"txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned"}
    | {"pg_trigger_depth", "pg_my_temp_schema", "inet_client_addr", "inet_client_port"}
    | {"lo_import", "lo_export", "lo_create", "lo_creat", "lo_unlink", "lo_put"}
    | {"lo_from_bytea", "pg_logical_emit_message", "dblink", "dblink_exec"}
    | {"last_insert_rowid", "changes", "total_changes"}
)
_KEPT = 4096  # SQL texts whose calls are kept: a process sends the same few again and again
_called: dict[str, frozenset[str]] = {}


def called(sql: str) -> frozenset[str]:
    """The names, in lower case, that ``sql`` calls: every name followed by a parenthesis,
    keywords, an INSERT's target, an alias and string literals aside (a type's name may be
    among them).

    Kept per text: the statements a process sends are the same few again and again.
    """
    found = _called.get(sql)
    if found is None:
        found = frozenset(
            (quoted.replace('""', '"') if quoted else bare).lower()
            for into, quoted, bare in _CALLED.findall(mask_strings(sql, "''"))
            if not into and (quoted or bare.lower() not in _KEYWORDS)
        )
        if len(_called) >= _KEPT:
            _called.clear()
        _called[sql] = found
    return found


def only_reads(sql: str) -> bool:
    """Whether every function ``sql`` calls is one of `READ_ONLY_FUNCTIONS`."""
    return called(sql) <= READ_ONLY_FUNCTIONS
