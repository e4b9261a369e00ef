"""Unused eager loads: a relationship that a repository read loaded with ``load=[...]`` and that
no code read before the transaction committed (or the ``detect_nplusone()`` block ended). Warned,
never raised, under ``nplusone="warn"`` and ``"raise"``; a transaction rolled back, or a block
left by an exception, reports nothing (the code stopped before it could read what it loaded).

How a read of an already loaded attribute is seen: SQLAlchemy has no event for it, because
``InstrumentedAttribute.__get__`` returns ``instance.__dict__[key]`` directly. While a read's
eager loads are watched, the relationship's one ``InstrumentedAttribute`` object (per mapped
class) has its ``__class__`` switched to a subclass whose ``__get__`` first notes which instance
was read, and switched back when the last watch of that relationship closes. So nothing is
patched while nothing is watched; instance state is left alone (pickling, ``inspect()`` and the
identity map see what they always see); every read through the attribute counts, whether plain
``obj.posts``, ``getattr``, ``inspect(obj).attrs.posts.value`` or ``obj.awaitable_attrs.posts``
(which calls ``getattr`` in a greenlet). A relationship whose attribute is not a plain
``InstrumentedAttribute`` is not watched at all: a missed warning, never a false one. With
detection off the repository pays one attribute check (``WATCH.on``) per read.
"""

from __future__ import annotations

import contextvars
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import RelationshipProperty, Session, SessionTransaction
from sqlalchemy.orm.attributes import InstrumentedAttribute

from dalkit.observe._source import caller_location, format_location
from dalkit.observe.errors import UnusedEagerLoadWarning

__all__ = ["WATCH", "EagerLoadWatch"]

_SESSION_KEY = "dalkit_eager_watches"
#: loader strategies that fill a relationship with the parent row(s); "raise", "noload" do not
_EAGER = frozenset({"joined", "selectin", "subquery", "immediate"})
_lock = threading.RLock()
# (id(instance), relationship key) -> watches holding that instance
_entries: dict[tuple[int, str], list[_Watch]] = {}
# id(attribute) -> open watches of it; the attribute's class is switched while this is > 0
_swapped: dict[int, int] = {}
# the watches of the innermost detect_nplusone() block, reported when it ends
_scope: contextvars.ContextVar[list[_Watch] | None] = contextvars.ContextVar(
    "dalkit_eager_scope", default=None
)


class _WatchedAttribute(InstrumentedAttribute[Any]):
    """An ``InstrumentedAttribute`` that notes reads from watched instances."""

    __slots__ = ()
    inherit_cache = True  # the same SQL compilation cache key as the plain attribute

    def __get__(self, instance: object | None, owner: Any) -> Any:
        if instance is not None and (id(instance), self.key) in _entries:
            _touched(instance, self.key)
        return InstrumentedAttribute.__get__(self, instance, owner)


class _Watch:
    """One relationship path of one read: the instances it was loaded for, until one is read."""

    __slots__ = (
        "attributes",
        "closed",
        "key",
        "location",
        "model",
        "parent",
        "path",
        "refs",
        "used",
    )

    def __init__(
        self,
        model: type[Any],
        path: tuple[str, ...],
        refs: dict[int, weakref.ref[Any]],
        attributes: list[InstrumentedAttribute[Any]],
        location: tuple[str, int] | None,
        parent: _Watch | None,
    ) -> None:
        self.model, self.path, self.key = model, path, path[-1]
        self.refs, self.attributes = refs, attributes
        self.location, self.parent = location, parent
        self.closed = False
        self.used = False


def _touched(instance: object, key: str) -> None:
    with _lock:
        for watch in list(_entries.get((id(instance), key), ())):
            ref = watch.refs.get(id(instance))
            if ref is not None and ref() is instance:
                watch.used = True
                _release(watch)


def _release(watch: _Watch) -> None:
    """Stop watching (under the lock); the last watch of an attribute switches it back."""
    if watch.closed:
        return
    watch.closed = True
    for ident in watch.refs:
        held = _entries.get((ident, watch.key))
        if held is not None:
            if watch in held:
                held.remove(watch)
            if not held:
                del _entries[(ident, watch.key)]
    for attribute in watch.attributes:
        left = _swapped[id(attribute)] - 1
        if left:
            _swapped[id(attribute)] = left
        else:
            del _swapped[id(attribute)]
            attribute.__class__ = InstrumentedAttribute


def _report(watches: Iterable[_Watch]) -> None:
    with _lock:
        pending = [w for w in watches if not w.closed]
        # a path under an unused relationship is unused too: one warning, for the outer one
        unused = [w for w in pending if not w.used and (w.parent is None or w.parent.used)]
        for watch in pending:
            _release(watch)
    for watch in unused:
        name = f"{watch.model.__name__}.{watch.key}"
        count = len(watch.refs)
        message = (
            f"unused eager load: {name} was loaded for {count} {watch.model.__name__} "
            f"instance{'s' if count != 1 else ''} by the read at "
            f"{format_location(watch.location)} and never read; fix: drop "
            f'"{".".join(watch.path)}" from load='
        )
        if watch.location is None:
            warnings.warn(UnusedEagerLoadWarning(message), stacklevel=2)
        else:
            warnings.warn_explicit(
                UnusedEagerLoadWarning(message), UnusedEagerLoadWarning, *watch.location
            )


def _taken(session: Session) -> list[_Watch]:
    # the list stays in session.info (its finalizer holds it): emptied, not replaced
    held: list[_Watch] | None = session.info.get(_SESSION_KEY)
    if not held:
        return []
    watches = list(held)
    held.clear()
    return watches


def _on_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: the transaction goes on
    watches = _taken(session)
    if watches:
        _report(watches)


def _on_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    # a commit reported already: what is left was rolled back or closed without a commit
    if transaction.parent is None:
        watches = _taken(session)
        if watches:
            _forget(watches)


def _forget(watches: list[_Watch]) -> None:
    """Stop watching without a report (a rollback, or a session garbage collected)."""
    with _lock:
        for watch in watches:
            _release(watch)


class EagerLoadWatch:
    """The switch repositories check (``WATCH.on``) and the bookkeeping behind it."""

    def __init__(self) -> None:
        self.on = False
        self._mode_of: Callable[[Session], str] = lambda session: "off"

    def switch(self, on: bool, mode_of: Callable[[Session], str]) -> None:
        """Watch reads (``on``: some database has N+1 detection on), or stop watching new ones
        (those already made are still reported).

        Args:
            on: Whether repositories should hand their eager-loading reads over.
            mode_of: The N+1 mode of a session's database, for this thread or task.
        """
        with _lock:
            self._mode_of = mode_of
            self.on = on

    def loaded(self, session: Any, options: Sequence[Any], rows: Sequence[Any]) -> None:
        """Watch the relationships a repository read's eager loads filled.

        Args:
            session: The read's Session or AsyncSession.
            options: The read's loader options (``load=[...]`` made them).
            rows: The entities it returned.
        """
        paths = _eager_paths(options)
        if not paths or not rows:
            return
        sync: Session = getattr(session, "sync_session", session)
        if self._mode_of(sync) == "off":
            return
        location = caller_location()
        made: dict[tuple[str, ...], _Watch] = {}
        for path in sorted(paths, key=len):
            watch = _watch(rows, path, location, made.get(path[:-1]))
            if watch is not None:
                made[path] = watch
        if not made:
            return
        watches = list(made.values())
        held = sync.info.get(_SESSION_KEY)
        if held is None:
            held = sync.info[_SESSION_KEY] = []
            weakref.finalize(sync, _forget, held)
            # on this session only: a commit listener on the Session class would send every
            # read-only transaction of the process through SQLAlchemy's whole commit (see
            # dalkit.transaction.deferred.nothing_to_commit), watched or not
            event.listen(sync, "after_commit", _on_commit)
            event.listen(sync, "after_transaction_end", _on_transaction_end)
        held.extend(watches)
        scoped = _scope.get()
        if scoped is not None:
            scoped.extend(watches)

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Report the watches made inside the block when it ends (``detect_nplusone()``),
        unless an exception ends it."""
        watches: list[_Watch] = []
        token = _scope.set(watches)
        try:
            yield
        except BaseException:
            _forget(watches)
            raise
        finally:
            _scope.reset(token)
        _report(watches)


WATCH = EagerLoadWatch()


def _eager_paths(options: Sequence[Any]) -> set[tuple[str, ...]]:
    """Relationship paths (``("posts", "comments")``) that loader options fill eagerly."""
    paths: set[tuple[str, ...]] = set()
    for option in options:
        for element in getattr(option, "context", ()):
            strategy = dict(getattr(element, "strategy", None) or ())
            if strategy.get("lazy") not in _EAGER:
                continue
            hops = getattr(getattr(element, "path", None), "path", ())[1::2]
            if hops and all(isinstance(hop, RelationshipProperty) for hop in hops):
                paths.add(tuple(hop.key for hop in hops))
    return paths


def _loaded_values(value: Any) -> Iterator[Any]:
    if value is None:
        return
    if isinstance(value, dict):  # attribute_keyed_dict collections
        yield from value.values()
    elif isinstance(value, list | set | tuple):
        yield from value
    else:
        yield value


def _watch(
    rows: Sequence[Any],
    path: tuple[str, ...],
    location: tuple[str, int] | None,
    parent: _Watch | None,
) -> _Watch | None:
    if len(path) > 1 and parent is None:
        return None
    level: list[Any] = list(rows)
    for key in path[:-1]:
        # the instance dict, not the attribute: walking must not count as a read
        level = [v for obj in level for v in _loaded_values(inspect(obj).dict.get(key))]
    key = path[-1]
    refs: dict[int, weakref.ref[Any]] = {}
    attributes: dict[int, InstrumentedAttribute[Any]] = {}
    model: type[Any] | None = None
    for obj in level:
        state = inspect(obj)
        if key not in state.dict:
            continue
        attribute = state.manager.get(key)
        if type(attribute) not in (InstrumentedAttribute, _WatchedAttribute):
            return None  # cannot see reads of it: better no warning than a false one
        try:
            refs[id(obj)] = weakref.ref(obj)
        except TypeError:
            return None
        attributes[id(attribute)] = attribute
        model = model or state.mapper.class_
    if model is None:
        return None
    watch = _Watch(model, path, refs, list(attributes.values()), location, parent)
    with _lock:
        for ident in refs:
            _entries.setdefault((ident, key), []).append(watch)
        for ident, attribute in attributes.items():
            _swapped[ident] = _swapped.get(ident, 0) + 1
            attribute.__class__ = _WatchedAttribute
    return watch
