"""An injection corpus: sqlmap-style payloads for PostgreSQL and SQLite, with the tricks that
slip past naive escaping (comments, unicode quotes, NUL bytes, huge numbers), and whole
statements for ``db.sql`` that hide a second statement or a value in the text."""

from __future__ import annotations

SLEEP = [
    "'; SELECT pg_sleep(5); --",
    "1; SELECT pg_sleep(5)",
    "' || pg_sleep(5) || '",
    "1 AND (SELECT 1 FROM pg_sleep(5)) IS NOT NULL",
    "(SELECT pg_sleep(5))",
    "1) AND 5=(SELECT 5 FROM PG_SLEEP(5)) AND (1=1",
    "id,(SELECT pg_sleep(5))",
    "(SELECT CASE WHEN 1=1 THEN pg_sleep(5) ELSE pg_sleep(0) END)",
    "1 AND 1=LIKE('ABCDEFG',UPPER(HEX(RANDOMBLOB(500000000/2))))",
    "randomblob(1000000000)",
    "'; WAITFOR DELAY '0:0:5'--",
    "1 OR SLEEP(5)#",
]

STACKED = [
    "'; DROP TABLE canary; --",
    "1; DROP TABLE canary",
    "x'); DELETE FROM canary; --",
    "id; DELETE FROM canary",
    "name; DROP TABLE canary --",
    "'; UPDATE canary SET secret='owned'; --",
    "1;TRUNCATE canary",
    '"; DROP TABLE canary; --',
    "id ASC; DROP TABLE canary",
    "'; COPY canary TO PROGRAM 'id'; --",
    "'; CREATE TABLE pwned(x int); --",
    "'; ATTACH DATABASE '/tmp/x.db' AS x; --",
]

BOOLEAN = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "' OR 1=1 #",
    "' OR 1=1/*",
    "1 OR 1=1",
    "1' OR '1'='1' --",
    '" OR ""="',
    "') OR ('a'='a",
    "admin'--",
    "' OR 'x'='x'#",
    "1 AND 1=1",
    "1 AND 1=2",
    "-1 OR 2>1",
    "x' AND 1=(SELECT COUNT(*) FROM canary) AND 'a'='a",
    "' OR EXISTS(SELECT 1 FROM canary) --",
    "1' AND substr((SELECT secret FROM canary),1,1)='s",
]

UNION = [
    "' UNION SELECT NULL --",
    "' UNION SELECT NULL,NULL,NULL --",
    "1 UNION ALL SELECT secret FROM canary",
    "' UNION SELECT secret, secret FROM canary --",
    "0 UNION SELECT sqlite_version()",
    "' UNION SELECT version() --",
    "' UNION SELECT name FROM sqlite_master --",
    "' UNION SELECT table_name FROM information_schema.tables --",
    "1) UNION SELECT 1,2,3 --",
]

ORDER_BY = [
    "(CASE WHEN (SELECT 1)=1 THEN id ELSE name END)",
    "CASE WHEN 1=1 THEN name ELSE email END",
    "id,(SELECT CASE WHEN 1=1 THEN 1 ELSE 1/0 END)",
    "(SELECT CASE WHEN substr(secret,1,1)='s' THEN 1 ELSE 1/0 END FROM canary)",
    "1",
    "2 DESC",
    "1,2,3",
    "id desc nulls first",
    'name COLLATE "C"',
    "(select 1)",
    "id ASC, (SELECT 1/0)",
    "IF(1=1,id,name)",
    "name->>'x'",
    "id::text",
    "lower(name)",
    "random()",
    "users.id",
    '"users"."id"',
    "id ASC LIMIT 1",
    "id OFFSET 5",
    "id FOR UPDATE",
    "-id)--",
]

TRICKS = [
    "/**/OR/**/1=1",
    "admin'/*",
    "--",
    "#",
    "';",
    "\\'",
    "''",
    "' '",
    "`id`",
    '"id"',
    "id--",
    "id/*comment*/",
    "i/**/d",
    "id ",
    " id",
    "id\t",
    "id\n",
    "ID",
    "Id",
    "*",
    "%",
    "_",
    "%%",
    "\\",
    "'",
    '"',
    "`",
    ";",
    ",",
    "(",
    ")",
    "id,id",
    "-",
    "+",
    "id;",
    "id)",
    "(id",
    "pg_sleep",
    "sqlite_master",
    "information_schema.tables",
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "0x27",
    "char(39)",
    "chr(39)||chr(39)",
    "$$; DROP TABLE canary; $$",
    "E'\\x27'",
    "U&'\\0027'",
    "'::text",
    "id__eq",
    "name__",
    "__eq",
    "id__eq__eq",
    "id__",
    "x" * 10_000,
]

UNICODE = [
    "\u02bc OR 1=1 --",  # modifier letter apostrophe
    "\uff07 OR 1=1 --",  # fullwidth apostrophe
    "\u2019 OR \u20191\u2019=\u20191",
    "\u2018",
    "\u201c OR \u201d\u201d=\u201d",
    "\u0131d",  # dotless i
    "\u0456d",  # cyrillic i
    "id\u200b",  # zero-width space
    "\uff49\uff44",  # fullwidth "id"
    "na\u0308me",
    "\u212a",  # Kelvin sign
    "\u017f",  # long s
    "\ufeffid",
    "\U0001f600",
    "\u202e' OR 1=1 --",
]

NUL = [
    "id\x00",
    "\x00' OR 1=1 --",
    "a\x00b",
    "\x00",
    "name\x00; DROP TABLE canary",
]

HUGE = [
    "9" * 100,
    "1e309",
    "-9223372036854775809",
    "9223372036854775808",
    "18446744073709551616",
    "2147483648",
    "-2147483649",
    "1e-400",
    "0x7fffffff",
    "NaN",
    "Infinity",
    "-inf",
    "1" + "0" * 5000,
]

BASE = SLEEP + STACKED + BOOLEAN + UNION + ORDER_BY + TRICKS + UNICODE + NUL + HUGE
# the same payloads glued to the kinds of prefix a vulnerable query would put before them
PAYLOADS: list[str] = list(
    dict.fromkeys(
        BASE
        + [f"name {p}" for p in SLEEP + STACKED + UNION]
        + [f"1{p}" for p in BOOLEAN + STACKED]
        + [f"id {p}" for p in ORDER_BY[:10]]
    )
)
NON_STRING = [2**64, 10**100, -(2**63) - 1, float("inf"), float("nan"), 1e308, b"' OR 1=1", None]

assert len(PAYLOADS) >= 200, len(PAYLOADS)

# whole statements for db.sql: each hides a second statement, or a value where a :name belongs
RAW_SQL_REFUSED = [
    "SELECT 1; DROP TABLE canary",
    "SELECT 1;DROP TABLE canary--",
    "SELECT secret FROM canary WHERE id = 1; DELETE FROM canary",
    "SELECT 1 /* ; */; DELETE FROM canary",
    "SELECT 1 AS a$$, 2; DELETE FROM canary; SELECT 3 AS b$$",
    "SELECT 1 AS x$q$, 2; DELETE FROM canary; SELECT 3 AS y$q$",
    "SELECT 1 AS a$$; DELETE FROM canary; SELECT $$",
    "SELECT 'a\\'; DELETE FROM canary; --'",
    "SELECT E'\\''; DELETE FROM canary; --'",
    "SELECT e'\\\\'; DELETE FROM canary; --'",
    "SELECT 1 # 2; DELETE FROM canary",
    "SELECT 1 #; DELETE FROM canary",
    "SELECT /* /* */ ' */ ; DELETE FROM canary; -- '",
    "SELECT 1 [; DELETE FROM canary; SELECT 1]",
    'SELECT "a\\"; DELETE FROM canary; --"',
    "SELECT 1 --\r; DELETE FROM canary",
    "SELECT 1 --\n; DELETE FROM canary",
    "SELECT 1;\n\nUPDATE canary SET secret = 'owned'",
    "SELECT 1; COPY canary TO PROGRAM 'id'",
    "SELECT 1; ATTACH DATABASE '/tmp/x.db' AS x",
    "SELECT 1; SELECT pg_sleep(5)",
    "SELECT secret FROM canary WHERE id = ?",
    "SELECT secret FROM canary WHERE id = %s",
    "SELECT secret FROM canary WHERE id = %(id)s",
    "SELECT secret FROM canary WHERE id = $1",
    "SELECT secret FROM canary WHERE id = {id}",
    "SELECT secret FROM canary WHERE secret = '' OR {}",
    "SELECT secret FROM canary WHERE id = :id",
    "SELECT 'unterminated",
    'SELECT "unterminated',
    "SELECT `unterminated",
    "SELECT 1 /* unterminated",
    "\x00SELECT 1",
    "SELECT 1\x00; DELETE FROM canary",
    "SELECT 1" + " " * 100_000,
]
# not refused by the checker, but no database runs them as a second statement
RAW_SQL_HARMLESS = [
    "SELECT 1\uff1b DELETE FROM canary",  # fullwidth semicolon
    "SELECT 1\u037e DELETE FROM canary",  # Greek question mark
    "SELECT $$; DELETE FROM canary; $$ AS v",
    "SELECT 'x; DELETE FROM canary' AS v",
    "SELECT 1 AS v -- ; DELETE FROM canary",
    'SELECT 1 AS "; DELETE FROM canary"',
]
