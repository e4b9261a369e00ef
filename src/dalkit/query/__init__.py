"""Building queries from user input without I/O: model fields and coercion, specs and filters,
sorting, pagination, signed cursors, soft delete, QueryBuilder and the raw-SQL check."""
