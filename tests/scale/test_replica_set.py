"""The routing decisions without servers: weights, read-your-writes positions, lag, ejection."""

from __future__ import annotations

import contextvars
from collections import Counter
from typing import Any

import pytest

from dalkit.engine.replicas import Replica, ReplicaSet, format_lsn, parse_lsn
from dalkit.errors import ConfigurationError


def _set(*weights: int, max_lag_s: float = 1.0) -> ReplicaSet[str]:
    return ReplicaSet(
        [(f"r{i}", f"engine{i}", w) for i, w in enumerate(weights)],
        max_lag_s=max_lag_s,
        interval_s=0.1,
    )


def _seen(replica: Replica[str]) -> tuple[str, Any]:
    return replica.state, replica.lag_s


def test_weights_share_reads_smoothly() -> None:
    replicas = _set(2, 1)
    for replica in replicas.replicas:
        replicas.observed(replica, 0.0, 0)
    picks = [replicas.choose() for _ in range(9)]
    names = [p.name for p in picks if p is not None]
    assert Counter(names) == {"r0": 6, "r1": 3}
    assert "r1r1" not in "".join(names)  # never two in a row for the lighter one


def test_a_write_keeps_reads_off_replicas_that_have_not_replayed_it() -> None:
    replicas = _set(1)
    replicas.primary_at(0.0, 100)
    replicas.observed(replicas.replicas[0], 0.0, 100)

    def after_write() -> object:
        replicas.wrote(200)
        return replicas.choose()

    assert contextvars.Context().run(after_write) is None  # the primary
    assert replicas.choose() is replicas.replicas[0]  # another context: the replica
    replicas.observed(replicas.replicas[0], 0.1, 200)
    assert contextvars.Context().run(after_write) is replicas.replicas[0]


def test_lag_is_the_age_of_the_oldest_position_not_replayed() -> None:
    replicas = _set(1, max_lag_s=1.0)
    replica = replicas.replicas[0]
    replicas.primary_at(10.0, 100)
    replicas.primary_at(11.0, 200)
    replicas.observed(replica, 11.5, 150)
    assert replica.lag_s == pytest.approx(0.5)  # missing what the primary had at 11.0
    assert replica.state == "healthy"
    replicas.observed(replica, 12.5, 150)
    assert replica.state == "lagging"
    assert replicas.choose() is None
    replicas.observed(replica, 12.6, 200)
    assert _seen(replica) == ("healthy", 0.0)
    assert replica.ejections == 1


def test_tokens_round_trip_and_bad_ones_are_refused() -> None:
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    replicas = _set(1)
    reset = replicas.require("0/10")
    assert replicas.token() == "0/10"
    replicas.release(reset)
    assert replicas.token() is None
    with pytest.raises(ConfigurationError):
        replicas.require("16-B374")
    with pytest.raises(ConfigurationError):
        _set(-1)


def test_writes_inside_a_required_block_still_bind_reads_after_it() -> None:
    replicas = _set(1)
    replicas.primary_at(0.0, 100)
    replicas.observed(replicas.replicas[0], 0.0, 100)

    def request() -> tuple[str | None, object]:
        reset = replicas.require(format_lsn(50))  # the client's older token
        replicas.wrote(200)
        replicas.release(reset)
        return replicas.token(), replicas.choose()

    token, chosen = contextvars.Context().run(request)
    assert token == format_lsn(200)
    assert chosen is None  # the replica has not replayed the write: the primary


def test_a_context_copied_inside_a_required_block_records_its_writes_in_it() -> None:
    # a sync endpoint runs in a worker thread on a copy of the request's context: a write it
    # commits there (requires_new) must reach the position the middleware hands the client
    replicas = _set(1)

    def request() -> str | None:
        reset = replicas.require(None)
        contextvars.copy_context().run(replicas.wrote, 300)
        token = replicas.token()
        replicas.release(reset)
        assert replicas.token() == token
        return token

    assert contextvars.Context().run(request) == format_lsn(300)


def test_contexts_copied_outside_a_block_keep_their_writes_apart() -> None:
    # requests copied from a server's main context must not pool their writes
    replicas = _set(1)

    def server() -> tuple[str | None, str | None]:
        replicas.wrote(100)  # a write at start-up, in the main context
        contextvars.copy_context().run(replicas.wrote, 900)  # one request's
        other = contextvars.copy_context().run(replicas.token)
        return replicas.token(), other

    assert contextvars.Context().run(server) == (format_lsn(100), format_lsn(100))


def test_a_replica_never_probed_gets_no_reads_and_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replicas = _set(1, 1)
    assert replicas.choose() is None  # was the replica: admitted before anyone looked
    replicas.observed(replicas.replicas[0], 0.0, 0)
    assert replicas.choose() is replicas.replicas[0]  # the other is still unknown
    stats = replicas.snapshot()
    assert (stats["primary_reads"], stats["unprobed_on_primary"]) == (1, 1)
    assert stats["all_ejected_on_primary"] == 0
    assert not caplog.records  # the start of a process is no ejection


def test_a_lower_position_probed_is_another_host_and_is_believed() -> None:
    # a multi-host replica URL whose next host answers: it has replayed less than the first
    replicas = _set(1)
    replicas.primary_at(0.0, 200)
    replicas.observed(replicas.replicas[0], 0.0, 200)
    replicas.observed(replicas.replicas[0], 0.1, 100)
    assert replicas.replicas[0].replay_lsn == 100  # was 200: the first host's

    def after_write() -> object:
        replicas.wrote(150)
        return replicas.choose()

    assert contextvars.Context().run(after_write) is None  # the primary


def test_replicas_weighted_zero_are_drained_not_ejected(caplog: pytest.LogCaptureFixture) -> None:
    replicas = _set(0)
    replicas.observed(replicas.replicas[0], 0.0, 0)
    assert replicas.choose() is None
    stats = replicas.snapshot()
    assert (stats["primary_reads"], stats["all_ejected_on_primary"]) == (1, 0)  # was (1, 1)
    assert not caplog.records  # was "every replica is ejected", for a healthy replica
    figures = stats["replicas"]["r0"]
    # before, only "admitted": True told of it, as if it got reads
    assert (figures["admitted"], figures["weight"], figures["drained"]) == (True, 0, True)


def test_behind_every_sample_the_replayed_age_bounds_the_lag() -> None:
    # a process started while its replica lagged: its first sample of the primary is recent,
    # and the replica misses more than what came after it
    replicas = _set(1, 1, 1, max_lag_s=5.0)
    far, near, blind = replicas.replicas
    replicas.primary_at(100.0, 1000)
    replicas.observed(far, 100.1, 900, replay_age_s=20.0)
    assert _seen(far) == ("lagging", 20.0)  # was healthy with lag 0.1
    replicas.observed(near, 100.1, 990, replay_age_s=0.3)
    assert _seen(near) == ("healthy", pytest.approx(0.3))
    replicas.observed(blind, 100.1, 900, replay_age_s=None)  # nothing replayed since its start
    assert _seen(blind) == ("lagging", None)
    # past the first sample, the samples measure it again: an idle primary's old commit
    # (a large replayed age) no longer counts
    replicas.primary_at(101.0, 1100)
    replicas.observed(far, 101.2, 1000, replay_age_s=3600.0)
    assert _seen(far) == ("healthy", pytest.approx(0.2))
    assert [getattr(replicas.choose(), "name", None) for _ in range(2)] == ["r0", "r1"]


def test_behind_a_sample_taken_after_a_gap_the_sample_before_bounds_the_lag() -> None:
    # a forked child, a monitor restarted, a failed probe: nothing seen from 5.0 to 9.0
    replicas = _set(1, max_lag_s=1.0)
    replica = replicas.replicas[0]
    replicas.primary_at(0.0, 100)
    replicas.observed(replica, 0.0, 100, replay_age_s=0.0)
    replicas.primary_at(5.0, 100)  # still there at 5.0
    replicas.primary_unseen()
    replicas.primary_at(9.0, 200)
    replicas.observed(replica, 9.1, 100, replay_age_s=60.0)
    assert _seen(replica) == ("lagging", pytest.approx(4.1))  # was 0.1
    replicas.observed(replica, 9.2, 100, replay_age_s=2.0)  # what it replayed last is younger
    assert _seen(replica) == ("lagging", pytest.approx(2.0))


def test_a_write_after_an_idle_spell_does_not_eject_replicas_a_moment_behind() -> None:
    # the last commit they replayed is a minute old: only a gap makes that bound count
    replicas = _set(1, 1, max_lag_s=1.0)
    first, second = replicas.replicas
    replicas.primary_at(0.0, 100)
    for replica in (first, second):
        replicas.observed(replica, 0.0, 100, replay_age_s=0.0)
    replicas.primary_at(60.0, 100)
    replicas.primary_at(60.2, 200)
    for replica in (first, second):  # the first one's probe trims the samples
        replicas.observed(replica, 60.25, 100, replay_age_s=60.25)
        assert _seen(replica) == ("healthy", pytest.approx(0.05))
