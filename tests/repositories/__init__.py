"""Repository tests: the behaviour suite shared by the SQL and in-memory repositories."""
