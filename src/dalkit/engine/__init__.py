"""The engine layer: building engines for each driver, SQLite's quirks, pool metrics and the
health check. Imports nothing above it."""
