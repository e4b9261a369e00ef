"""Repositories: the shared base, the SQL backend with bulk loading (COPY), and the in-memory
backend for unit tests."""
