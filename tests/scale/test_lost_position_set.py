"""Read-your-writes positions that could not be read after a commit, without servers: the
context reads from the primary, its token says so, and a later read of the primary's position
settles it (engine/ryw.py)."""

from __future__ import annotations

import contextvars
import time

from dalkit.engine.replicas import ReplicaSet, format_lsn
from dalkit.engine.ryw import LOST_TOKEN


def _set() -> ReplicaSet[str]:
    replicas = ReplicaSet([("r0", "engine0", 1)], max_lag_s=3600, interval_s=0.1)
    replicas.primary_at(0.0, 100)
    replicas.observed(replicas.replicas[0], 0.0, 100)
    return replicas


def test_a_lost_position_reads_from_the_primary_until_a_later_read_settles_it() -> None:
    replicas = _set()
    before = time.monotonic()

    def lost_then_settled() -> list[object]:
        replicas.position_lost()
        seen: list[object] = [replicas.choose(), replicas.token()]
        replicas.primary_read(before, 150)  # started before the loss: settles nothing
        seen += [replicas.choose(), replicas.token()]
        replicas.primary_read(time.monotonic(), 200)
        seen += [replicas.choose(), replicas.token()]
        replicas.observed(replicas.replicas[0], 0.0, 200)
        seen.append(replicas.choose())
        return seen

    seen = contextvars.Context().run(lost_then_settled)
    assert seen[:6] == [None, LOST_TOKEN, None, LOST_TOKEN, None, format_lsn(200)]
    assert seen[6] is replicas.replicas[0]
    assert contextvars.Context().run(replicas.choose) is replicas.replicas[0]  # others unbound


def test_a_lost_token_of_another_process_reads_from_the_primary_until_settled_here() -> None:
    replicas = _set()

    def handed_a_lost_token() -> list[object]:
        reset = replicas.require(LOST_TOKEN)
        seen: list[object] = [replicas.choose(), replicas.token()]
        replicas.primary_read(time.monotonic(), 300)  # the monitor's next sample
        seen += [replicas.choose(), replicas.token()]
        replicas.release(reset)
        seen.append(replicas.token())  # it bound reads in the block only: no write of ours
        return seen

    assert contextvars.Context().run(handed_a_lost_token) == [
        None,
        LOST_TOKEN,
        None,
        format_lsn(300),
        None,
    ]


def test_a_loss_inside_a_token_s_block_binds_the_context_after_it() -> None:
    replicas = _set()

    def lost_in_block() -> list[object]:
        reset = replicas.require(format_lsn(50))
        replicas.position_lost()  # a commit of ours inside the block
        replicas.release(reset)
        seen: list[object] = [replicas.choose(), replicas.token()]
        replicas.wrote(400, time.monotonic())  # our next commit's position settles both
        seen += [replicas.choose(), replicas.token()]
        return seen

    assert contextvars.Context().run(lost_in_block) == [None, LOST_TOKEN, None, format_lsn(400)]
