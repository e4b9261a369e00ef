"""Query-layer tests: raw SQL checks, input limits, cursors, sensitive columns, the codec,
QueryBuilder joins, write coercion, LIKE matching and eager loading."""
