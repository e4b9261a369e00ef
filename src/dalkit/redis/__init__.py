"""Redis: configuration, clients and the sync and async managers (redis-py, imported lazily)."""
