"""dalkit's benchmarks: ``python -m bench`` (``make bench``) runs every ``bench_*.py`` module.

Each module exposes ``run(pg_url, sqlite_url) -> list[dict]``; see ``bench/__main__.py``.
"""
