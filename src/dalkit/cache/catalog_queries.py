"""The statements that read what the query cache's catalog map (`dalkit.cache.catalog`) needs
from a database's catalog: one per dialect, one row per fact, (name, kind, detail).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.sql.elements import TextClause

from dalkit.engine.sql_calls import SESSION_BOUND
from dalkit.engine.statement_hooks import WRITES_OPTION

__all__ = ["catalog_query"]

# One row per fact: every relation (kind NULL); each relation a view's rewrite rule depends on
# (kind 'v', or 'w' for a view that takes writes, which reach its tables); each parent a table
# inherits from (kind 'i': declarative partitions and INHERITS alike; the child's relkind
# leaves out the partitioned indexes pg_inherits also lists); each relation a rule (CREATE
# RULE, not a view's own) names, which it may write (kind 'r'); each trigger's function, as
# "language\nname\nsource" (kind 't'; foreign keys' own triggers are internal); each table a
# table's foreign key cascades from, with ON DELETE/UPDATE CASCADE, SET NULL or SET DEFAULT
# (kind 'f'); each table with row-level security enabled (kind 's'); each function a view
# calls (kind 'c': those pg_depend records, and the SESSION_BOUND built-in ones its definition
# calls); each function (not a trigger's) as "language\nvolatility\nsource" (kind
# 'p'), save an extension's in C, which the cache takes for built-in (uuid-ossp's, PostGIS's);
# a body of SQL-standard form (BEGIN ATOMIC) is in pg_get_functiondef alone; each function a
# column default calls (kind 'd': an INSERT runs it, as a trigger would; pg_depend records no
# call of a built-in one, such as a serial's nextval() or now()).
# the catalog's queries write nothing, though they call chr() while the map that would tell is
# unread (CatalogMap.calls_written)
_WRITES_NOTHING = {WRITES_OPTION: ()}
# a call of a SESSION_BOUND function in a view's definition: pg_depend records no dependency on
# a built-in function (PostgreSQL's regular expression: \m starts a word)
_SESSION_BOUND_CALL = r"\m(" + "|".join(sorted(SESSION_BOUND)) + r")\s*\("
_POSTGRES = text(
    """
    SELECT c.relname,
        CASE WHEN c.relkind = 'v' THEN
            CASE WHEN pg_catalog.pg_relation_is_updatable(c.oid, false) > 0 THEN 'w' ELSE 'v' END
        END,
        ref.relname::text
    FROM pg_catalog.pg_class c
    LEFT JOIN pg_catalog.pg_rewrite r ON c.relkind = 'v' AND r.ev_class = c.oid
    LEFT JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> c.oid
    LEFT JOIN pg_catalog.pg_class ref ON ref.oid = d.refobjid
    WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
    UNION ALL
    SELECT c.relname, 'i', p.relname::text
    FROM pg_catalog.pg_inherits i
    JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relkind IN ('r', 'p', 'f')
    JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
    UNION ALL
    SELECT c.relname, 'r', ref.relname::text
    FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
    JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> c.oid
    JOIN pg_catalog.pg_class ref ON ref.oid = d.refobjid
    WHERE r.rulename <> '_RETURN'
    UNION ALL
    SELECT c.relname, 'f', p.relname::text
    FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
    JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
    WHERE k.contype = 'f'
        AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
    UNION ALL
    SELECT c.relname, 's', 'row security' FROM pg_catalog.pg_class c WHERE c.relrowsecurity
    UNION ALL
    SELECT c.relname, 't', l.lanname || chr(10) || f.proname || chr(10) || f.prosrc
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
    JOIN pg_catalog.pg_language l ON l.oid = f.prolang
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT c.relname, 'c', f.proname::text
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid
    JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_proc'::regclass
    JOIN pg_catalog.pg_proc f ON f.oid = d.refobjid
    WHERE c.relkind = 'v'
    UNION ALL
    SELECT c.relname, 'c', lower(m.found[1])
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL regexp_matches(pg_catalog.pg_get_viewdef(c.oid), '_SESSION_BOUND_', 'gi')
        AS m(found)
    WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT f.proname, 'p', l.lanname || chr(10) || f.provolatile::text || chr(10)
        || CASE WHEN f.prosrc = '' THEN pg_catalog.pg_get_functiondef(f.oid) ELSE f.prosrc END
    FROM pg_catalog.pg_proc f
    JOIN pg_catalog.pg_namespace n ON n.oid = f.pronamespace
    JOIN pg_catalog.pg_language l ON l.oid = f.prolang
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND f.prokind IN ('f', 'p')
        AND f.prorettype NOT IN ('pg_catalog.trigger'::regtype, 'pg_catalog.event_trigger'::regtype)
        AND (l.lanname IN ('plpgsql', 'sql') OR NOT EXISTS (
            SELECT FROM pg_catalog.pg_depend d
            WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = f.oid
                AND d.deptype = 'e'))
    UNION ALL
    SELECT c.relname, 'd', f.proname::text
    FROM pg_catalog.pg_attrdef a
    JOIN pg_catalog.pg_class c ON c.oid = a.adrelid
    JOIN pg_catalog.pg_depend d
        ON d.classid = 'pg_catalog.pg_attrdef'::regclass AND d.objid = a.oid
        AND d.refclassid = 'pg_catalog.pg_proc'::regclass
    JOIN pg_catalog.pg_proc f ON f.oid = d.refobjid
    """.replace("_SESSION_BOUND_", _SESSION_BOUND_CALL)
).execution_options(**_WRITES_NOTHING)
# a view takes no writes without a trigger, whose table is the view's (kind 't')
_SQLITE = text(
    "SELECT name, CASE type WHEN 'view' THEN 'v' END, sql FROM sqlite_master "
    "WHERE type IN ('table', 'view') "
    "UNION ALL SELECT tbl_name, 't', 'sqlite' || char(10) || char(10) || sql FROM sqlite_master "
    "WHERE type = 'trigger' "
    "UNION ALL SELECT m.name, 'f', k.\"table\" FROM sqlite_master m "
    "JOIN pragma_foreign_key_list(m.name) k WHERE m.type = 'table' "
    "AND (upper(k.on_delete) IN ('CASCADE', 'SET NULL', 'SET DEFAULT') "
    "OR upper(k.on_update) IN ('CASCADE', 'SET NULL', 'SET DEFAULT'))"
).execution_options(**_WRITES_NOTHING)


def catalog_query(dialect_name: str) -> TextClause | None:
    """The statement listing a database's relations and what the map reads of them
    (`dalkit.cache.catalog`); None for a dialect whose catalog is not looked up (all plain
    tables)."""
    return {"postgresql": _POSTGRES, "sqlite": _SQLITE}.get(dialect_name)
