"""Fork safety: after ``os.fork()`` a child never uses its parent's pooled connections.

Parent and child would otherwise send on the same sockets and read each other's results (a
gunicorn or multiprocessing worker forked from a process that had queried). SQLAlchemy's own
recipe is applied to every engine dalkit builds: in the child, ``dispose(close=False)`` gives each
engine a fresh pool and leaves the parent's connections open for the parent.
"""

from __future__ import annotations

import os
import weakref

from sqlalchemy.engine import Engine

__all__ = ["track"]

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def track(engine: Engine) -> None:
    """Give ``engine`` (a sync engine, or an AsyncEngine's) a fresh pool in a forked child.

    Args:
        engine: The engine.
    """
    _engines.add(engine)


def _fresh_pools_in_child() -> None:
    for engine in list(_engines):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_fresh_pools_in_child)
