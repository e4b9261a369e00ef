"""The peers run: the shared table, every peer set up once to count its statements and once to
be timed, each operation timed with its variants interleaved (bench.timing), then the loads."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import sys
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter
from typing import Any

import psycopg

from bench.peers.base import (
    BULK_TABLE,
    CATEGORIES,
    DDL,
    PAGE_SIZE,
    ROWS,
    TABLE,
    AsyncBulk,
    AsyncPeer,
    PeerError,
    SyncBulk,
    SyncPeer,
    Target,
    bulk_rows,
    insert_row,
)
from bench.peers.loop import AsyncLoop, at_once, in_sequence
from bench.peers.statements import StatementLog
from bench.timing import interleaved_samples

SYNC_PEERS = [
    ("dalkit_default", "DalkitSync"),
    ("sqlalchemy_orm", "SqlAlchemyOrmSync"),
    ("sqlalchemy_core", "SqlAlchemyCoreSync"),
    ("django_orm", "DjangoSync"),
    ("peewee_orm", "PeeweeSync"),
    ("raw_drivers", "PsycopgSync"),
]
ASYNC_PEERS = [
    ("dalkit_default", "DalkitAsync"),
    ("sqlalchemy_orm", "SqlAlchemyOrmAsync"),
    ("sqlalchemy_core", "SqlAlchemyCoreAsync"),
    ("tortoise_orm", "TortoiseAsync"),
    ("piccolo_orm", "PiccoloAsync"),
    ("advanced_alchemy_repo", "AdvancedAlchemyAsync"),
    ("raw_drivers", "AsyncpgPool"),
]
BASELINE = "dalkit default"
POOL_SIZE = 8
TASKS = 32
#: async requests per entry into the event loop from the (sync) timing code
CHUNK = 2
BATCH_S = 0.1
#: two rotations of the variants: the machine is shared, and medians of more batches hold better
MIN_REPEATS = 12
#: one rotation: each of its batches is ten rounds of 32 requests already
TASKS_REPEATS = 7
BULK_REPEATS = 5
#: a loader whose first load takes longer runs once: its figure is far from the targets anyway
SLOW_LOAD_S = 4.0

GET_S, PAGE_S, INSERT_S = "sync get by id", "sync page of 20 (filter + sort)", "sync insert 1 row"
GET_A, PAGE_A, INSERT_A = (
    "async get by id",
    "async page of 20 (filter + sort)",
    "async insert 1 row",
)
TASKS_A = f"async, {TASKS} tasks over a pool of {POOL_SIZE} (get by id)"
#: the raw driver's insert inside BEGIN ... COMMIT: no transactional insert can beat it
IN_TRANSACTION = "asyncpg, BEGIN + INSERT + COMMIT (raw)"
BULK_S, BULK_A = "sync bulk insert 100k (rows/s)", "async bulk insert 100k (rows/s)"
OPERATIONS = [GET_S, GET_A, PAGE_S, PAGE_A, INSERT_S, INSERT_A, TASKS_A, BULK_S, BULK_A]


@dataclasses.dataclass
class PeersRun:
    #: operation -> variant label -> ops/s of each timed batch (rows/s for loads)
    samples: dict[str, dict[str, list[float]]]
    #: operation -> variant label -> this process's CPU microseconds per request of each batch
    cpu_us: dict[str, dict[str, list[float]]]
    #: (operation, label) -> the statements one call sent, as kinds in order
    statements: dict[tuple[str, str], list[str]]
    #: "label (what)" -> why it is not in the figures
    left_out: dict[str, str]
    #: why statements were not counted, when they were not
    counting_skipped: str | None
    seconds: float


def run(target: Target) -> PeersRun:
    started = clock = perf_counter()
    with psycopg.connect(target.conninfo(), autocommit=True) as admin:
        for statement in DDL:
            admin.execute(statement)
        expected = _expected(admin)
        clock = _progress(f"{ROWS:,}-row table created", clock)
        left_out: dict[str, str] = {}
        sync_peers = _load(SYNC_PEERS, "sync", left_out)
        async_peers = _load(ASYNC_PEERS, "async", left_out)
        loop = AsyncLoop()
        try:
            checks = _Checks(target, loop, expected)
            statements, skipped = _count(target, loop, sync_peers, async_peers, checks, left_out)
            clock = _progress("statements counted", clock)
            sync_ready = [p for p in sync_peers if checks.setup_sync(p, left_out)]
            async_ready = [p for p in async_peers if checks.setup_async(p, left_out)]
            try:
                samples, cpu_us = _time_requests(loop, sync_ready, async_ready)
                rows = bulk_rows(ROWS)
                sync_loads = {
                    p.label: _bind(p.bulk, rows) for p in sync_ready if isinstance(p, SyncBulk)
                }
                async_loads = {
                    p.label: _async_load(loop, p, rows)
                    for p in async_ready
                    if isinstance(p, AsyncBulk)
                }
                clock = perf_counter()
                samples[BULK_S] = _time_loads(admin, sync_loads, left_out, "sync")
                clock = _progress(BULK_S, clock)
                samples[BULK_A] = _time_loads(admin, async_loads, left_out, "async")
                _progress(BULK_A, clock)
            finally:
                for peer in sync_ready:
                    peer.teardown()
                for apeer in async_ready:
                    loop.call(apeer.teardown())
        finally:
            loop.close()
    # a driver's error may quote the connection string
    left_out = {key: target.redact(reason) for key, reason in left_out.items()}
    return PeersRun(samples, cpu_us, statements, left_out, skipped, perf_counter() - started)


def _progress(what: str, since: float) -> float:
    now = perf_counter()
    print(f"  peers: {what} ({now - since:.0f} s)", file=sys.stderr, flush=True)
    return now


def _load(names: Sequence[tuple[str, str]], flavour: str, left_out: dict[str, str]) -> list[Any]:
    peers = []
    for module_name, class_name in names:
        try:
            module = importlib.import_module(f"bench.peers.{module_name}")
        except ImportError as exc:
            left_out[f"{module_name} ({flavour})"] = f"not installed: {exc}"
            continue
        peers.append(getattr(module, class_name)())
    return peers


def _expected(admin: psycopg.Connection[Any]) -> dict[str, Any]:
    """What a correct peer reads, straight from the server, to check every peer against."""
    page = admin.execute(
        f"SELECT id FROM {TABLE} WHERE category = 7 ORDER BY created_at DESC, id LIMIT {PAGE_SIZE}"
    ).fetchall()
    return {"get": 4242, "page": [row[0] for row in page]}


class _Checks:
    """Set a peer up and prove it reads the right rows before it is counted or timed."""

    def __init__(self, target: Target, loop: AsyncLoop, expected: Mapping[str, Any]) -> None:
        self.target, self.loop, self.expected = target, loop, expected

    def setup_sync(self, peer: SyncPeer, left_out: dict[str, str]) -> bool:
        def probe() -> None:
            peer.setup(self.target, POOL_SIZE)
            self._verify(peer.get(self.expected["get"]), peer.page(7))
            peer.insert(insert_row(0))

        return self._guard(f"{peer.label} (sync)", probe, left_out)

    def setup_async(self, peer: AsyncPeer, left_out: dict[str, str]) -> bool:
        async def probe() -> None:
            await peer.setup(self.target, POOL_SIZE)
            self._verify(await peer.get(self.expected["get"]), await peer.page(7))
            await peer.insert(insert_row(0))

        return self._guard(f"{peer.label} (async)", lambda: self.loop.call(probe()), left_out)

    def _verify(self, item: object, page: Sequence[object]) -> None:
        if _ident(item) != self.expected["get"]:
            raise PeerError(f"get read {item!r}, not row {self.expected['get']}")
        if [_ident(row) for row in page] != self.expected["page"]:
            raise PeerError("page read other rows than the server's own query")

    def _guard(self, key: str, call: Callable[[], object], left_out: dict[str, str]) -> bool:
        try:
            call()
        except Exception as exc:  # any failure leaves this one peer out, with its reason
            left_out[key] = self.target.redact(f"{type(exc).__name__}: {exc}")[:300]
            return False
        return True


def _ident(obj: object) -> object:
    """The primary key of an entity, a row or a record, whichever shape the peer returns."""
    if hasattr(obj, "id"):
        return obj.id
    row: Any = obj
    try:
        return row["id"]
    except (TypeError, KeyError, IndexError):
        return row[0]


def _count(
    target: Target,
    loop: AsyncLoop,
    sync_peers: list[Any],
    async_peers: list[Any],
    checks: _Checks,
    left_out: dict[str, str],
) -> tuple[dict[tuple[str, str], list[str]], str | None]:
    counts: dict[tuple[str, str], list[str]] = {}
    try:
        log = StatementLog(target)
    except (PeerError, psycopg.Error) as exc:
        return counts, target.redact(str(exc))
    with log.enabled():
        for peer in sync_peers:
            if checks.setup_sync(peer, left_out):
                _count_sync(log, peer, counts)
                peer.teardown()
        for apeer in async_peers:
            if checks.setup_async(apeer, left_out):
                _count_async(log, loop, apeer, counts)
                loop.call(apeer.teardown())
    if not all(counts.values()):
        # every request sends something: an empty count means the log is not where we read it
        return {}, "the server's log showed no statements for some requests; counts dropped"
    return counts, None


def _count_sync(
    log: StatementLog, peer: SyncPeer, counts: dict[tuple[str, str], list[str]]
) -> None:
    calls: dict[str, Callable[[], object]] = {
        GET_S: lambda: peer.get(4242),
        PAGE_S: lambda: peer.page(7),
        INSERT_S: lambda: peer.insert(insert_row(1)),
    }
    for op, call in calls.items():
        call()  # warm: caches filled, connections made
        counts[(op, peer.label)] = log.count(call)


def _count_async(
    log: StatementLog, loop: AsyncLoop, peer: AsyncPeer, counts: dict[tuple[str, str], list[str]]
) -> None:
    calls: dict[str, Callable[[], Any]] = {
        GET_A: lambda: peer.get(4242),
        PAGE_A: lambda: peer.page(7),
        INSERT_A: lambda: peer.insert(insert_row(1)),
    }
    for op, make in calls.items():
        loop.call(make())
        counts[(op, peer.label)] = log.count(_entering(loop, make))


def _entering(loop: AsyncLoop, make: Callable[[], Any]) -> Callable[[], object]:
    return lambda: loop.call(make())


def _inserting(peer: Any) -> Callable[[int], Any]:
    return lambda n: peer.insert(insert_row(n))


def _ids() -> Callable[[], int]:
    state = itertools.count()

    def next_id() -> int:
        return next(state) * 7919 % ROWS + 1  # a prime stride: scattered, every row

    return next_id


def _categories() -> Callable[[], int]:
    state = itertools.count()
    return lambda: next(state) % CATEGORIES


def _numbers() -> Callable[[], int]:
    state = itertools.count(2)
    return lambda: next(state)


Samples = dict[str, dict[str, list[float]]]  # operation -> variant -> a figure per batch


def _time_requests(
    loop: AsyncLoop, sync_peers: list[Any], async_peers: list[Any]
) -> tuple[Samples, Samples]:
    """ops/s and CPU microseconds per request of each batch, per operation and variant."""
    found: Samples = {}
    cpu_us: Samples = {}
    sync_ops = {GET_S: ("get", _ids), PAGE_S: ("page", _categories)}
    for op, (method, args) in sync_ops.items():
        found[op], cpu_us[op] = _interleaved(
            op, {p.label: _sync_op(getattr(p, method), args()) for p in sync_peers}
        )
    found[INSERT_S], cpu_us[INSERT_S] = _interleaved(
        INSERT_S, {p.label: _sync_op(_inserting(p), _numbers()) for p in sync_peers}
    )
    async_ops = {GET_A: ("get", _ids), PAGE_A: ("page", _categories)}
    for op, (method, args) in async_ops.items():
        found[op], cpu_us[op] = _interleaved(
            op,
            {p.label: _async_op(loop, getattr(p, method), args(), CHUNK) for p in async_peers},
            CHUNK,
        )
    inserts = {p.label: _async_op(loop, _inserting(p), _numbers(), CHUNK) for p in async_peers}
    for peer in async_peers:
        if hasattr(peer, "insert_in_transaction"):  # the raw driver: the floor of a transaction
            inserts[IN_TRANSACTION] = _async_op(
                loop, lambda n, p=peer: p.insert_in_transaction(insert_row(n)), _numbers(), CHUNK
            )
    found[INSERT_A], cpu_us[INSERT_A] = _interleaved(INSERT_A, inserts, CHUNK)
    found[TASKS_A], cpu_us[TASKS_A] = _interleaved(
        TASKS_A,
        {p.label: _async_op(loop, p.get, _ids(), TASKS, together=True) for p in async_peers},
        TASKS,
        TASKS_REPEATS,
    )
    return found, cpu_us


def _sync_op(fn: Callable[[int], object], args: Callable[[], int]) -> Callable[[], object]:
    return lambda: fn(args())


def _async_op(
    loop: AsyncLoop, fn: Any, args: Callable[[], int], n: int, together: bool = False
) -> Callable[[], object]:
    run = at_once if together else in_sequence
    return lambda: loop.call(run(fn, args, n))


def _interleaved(
    op: str,
    variants: dict[str, Callable[[], object]],
    per_call: int = 1,
    repeats: int = MIN_REPEATS,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """ops/s and this process's CPU microseconds per request, of each batch of each variant;
    ``per_call`` requests make one call."""
    started = perf_counter()
    cpu: dict[str, list[float]] = {}
    found = interleaved_samples(variants, batch_s=BATCH_S, min_repeats=repeats, cpu=cpu)
    _progress(op, started)
    ops_s = {name: [ops * per_call for ops in batches] for name, batches in found.items()}
    return ops_s, {name: [s * 1e6 / per_call for s in batches] for name, batches in cpu.items()}


def _bind(load: Callable[[Sequence[Any]], None], rows: list[Any]) -> Callable[[], object]:
    return lambda: load(rows)


def _async_load(loop: AsyncLoop, peer: Any, rows: list[Any]) -> Callable[[], object]:
    return lambda: loop.call(peer.bulk(rows))


def _time_loads(
    admin: psycopg.Connection[Any],
    loads: dict[str, Callable[[], object]],
    left_out: dict[str, str],
    flavour: str,
) -> dict[str, list[float]]:
    """Rows/s of each load into the emptied bulk table, the loaders taking turns."""
    samples: dict[str, list[float]] = {name: [] for name in loads}
    names = list(loads)
    for repeat in range(BULK_REPEATS):
        shift = repeat % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if name not in samples or (repeat and ROWS / samples[name][0] > SLOW_LOAD_S):
                continue
            admin.execute(f"TRUNCATE {BULK_TABLE}")
            try:
                started = perf_counter()
                loads[name]()
                took = perf_counter() - started
                row = admin.execute(f"SELECT count(*) FROM {BULK_TABLE}").fetchone()
                if row is None or row[0] != ROWS:
                    raise PeerError(f"the load wrote {row and row[0]} rows, not {ROWS}")
            except Exception as exc:  # one loader failing leaves only that loader out
                left_out[f"{name} ({flavour} bulk insert)"] = f"{type(exc).__name__}: {exc}"[:300]
                del samples[name]
                continue
            samples[name].append(ROWS / took)
    admin.execute(f"TRUNCATE {BULK_TABLE}")
    return samples
