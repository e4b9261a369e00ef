"""The query cache (memory and Redis backends, invalidated on commit by every write path)."""
