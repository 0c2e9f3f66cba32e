"""Coordinator replicas sharing stores, leases, events and counters (in memory).

Each test runs several ``Coordinator`` objects in one process, as the replicas of
a cluster: one run store and model store, one lease store on a fake clock, one
event bus. Time passes only when a test moves the clock, so lease expiry is exact.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from service_world import FakeClock, World, delta, submission

from fedlearn.cache import InMemoryEventBus, InMemoryLeaseStore, InMemoryRoundCounters
from fedlearn.core.central_dp import CentralDpConfig
from fedlearn.core.types import ClientCapabilities, RoundStatus
from fedlearn.errors import ConfigError, ConflictError
from fedlearn.service.cluster import ClusterPorts
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import TaskKind

TTL = 3.0


class Cluster:
    """Replicas over one world's stores."""

    def __init__(self, **config) -> None:
        self.world = World(**config)  # its own coordinator is not used
        self.config = self.world.config
        self.clock: FakeClock = self.world.clock
        self.leases = InMemoryLeaseStore(self.clock)
        self.bus = InMemoryEventBus()
        self.counters = InMemoryRoundCounters()
        self.world.runs = self.world.runs.__class__()
        self.world.models = self.world.models.__class__()
        self.replicas: dict[str, Coordinator] = {}

    def start(self, *names: str) -> None:
        for name in names:
            self.replicas[name] = Coordinator(
                self.config,
                self.world.initial,
                runs=self.world.runs,
                models=self.world.models,
                clock=self.clock,
                cluster=ClusterPorts(
                    replica_id=name,
                    leases=self.leases,
                    events=self.bus,
                    counters=self.counters,
                    lease_ttl_s=TTL,
                ),
            )

    def __getitem__(self, name: str) -> Coordinator:
        return self.replicas[name]

    def settle(self) -> None:
        self.bus.drain()

    def register(self, via: str, *clients: str) -> None:
        for client in clients:
            self[via].register_client(client, ClientCapabilities(available_samples=10))
        self.settle()

    def leader(self, round_number: int) -> str | None:
        lease = self.leases.current(f"r/round/{round_number}")
        return None if lease is None else lease.holder

    def crash(self, name: str) -> None:
        """The replica stops: no events, no ticks, its lease runs out."""
        replica = self.replicas.pop(name)
        assert replica._subscription is not None
        replica._subscription.close()

    def tick_all(self) -> None:
        for replica in self.replicas.values():
            replica.tick()
        self.settle()

    def round(self, number: int):
        return self.world.runs.get_round("r", number)


@pytest.fixture
def cluster():
    c = Cluster(num_rounds=3)
    yield c
    c.bus.close()


def test_one_round_opens_once_and_every_replica_hands_it_out(cluster: Cluster) -> None:
    cluster.start("a", "b", "c")
    cluster.register("a", "x")
    cluster.register("b", "y")
    rounds = cluster.world.runs.list_rounds("r")
    assert [r.round_number for r in rounds] == [0, 1]
    assert cluster.leader(1) in {"a", "b", "c"}
    for name in ("a", "b", "c"):
        task = cluster[name].poll_task("x")
        assert (task.kind, task.round_number) == (TaskKind.TRAIN, 1)


def test_updates_stored_by_followers_are_folded_by_the_leader(cluster: Cluster) -> None:
    cluster.start("a", "b", "c")
    cluster.register("a", "x", "y")
    leader = cluster.leader(1)
    followers = [n for n in ("a", "b", "c") if n != leader]
    acks = [
        cluster[followers[0]].submit_update(submission("x", 1, delta(1.0))),
        cluster[followers[1]].submit_update(submission("y", 1, delta(3.0))),
    ]
    cluster.settle()
    assert [a.duplicate for a in acks] == [False, False]
    done = cluster.round(1)
    assert done.status is RoundStatus.COMPLETED and done.participating_clients == 2
    weights = cluster[leader].global_weights()
    np.testing.assert_allclose(weights["w"], np.full((2, 3), 2.0))  # mean of 1 and 3
    cluster.tick_all()
    for name in ("a", "b", "c"):
        assert cluster[name].status().completed_rounds == 1
        np.testing.assert_allclose(cluster[name].global_weights()["w"], weights["w"])
        assert cluster[name].poll_task("x").round_number == 2


def test_a_second_update_through_another_replica_is_refused(cluster: Cluster) -> None:
    cluster.start("a", "b")
    cluster.register("a", "x", "y")
    cluster["a"].submit_update(submission("x", 1, delta(1.0), update_id="first"))
    cluster.settle()
    with pytest.raises(ConflictError) as refused:
        cluster["b"].submit_update(submission("x", 1, delta(9.0), update_id="second"))
    assert refused.value.reason == "already_submitted"
    # the same update again, through either replica, is acknowledged as a duplicate
    assert cluster["b"].submit_update(submission("x", 1, delta(1.0), update_id="first")).duplicate


def test_a_follower_takes_over_a_dead_leaders_round_and_loses_no_update() -> None:
    cluster = Cluster(num_rounds=3, min_clients=3)
    cluster.start("a", "b", "c")
    cluster.register("a", "x", "y", "z")
    leader = cluster.leader(1)
    others = [n for n in ("a", "b", "c") if n != leader]
    acked = [cluster[leader].submit_update(submission("x", 1, delta(1.0)))]
    acked.append(cluster[others[0]].submit_update(submission("y", 1, delta(2.0))))
    cluster.settle()
    cluster.crash(leader)
    cluster.clock.advance(TTL / 2)
    cluster.tick_all()
    assert cluster.leader(1) == leader  # not yet expired: nobody takes over
    cluster.clock.advance(TTL / 2 + 0.01)
    cluster.tick_all()
    assert cluster.leader(1) in others
    acked.append(cluster[others[1]].submit_update(submission("z", 1, delta(6.0))))
    cluster.settle()
    done = cluster.round(1)
    assert done.status is RoundStatus.COMPLETED
    assert done.participating_clients == len(acked) == 3
    np.testing.assert_allclose(cluster[others[0]].global_weights()["w"], np.full((2, 3), 3.0))
    cluster.bus.close()


def test_a_paused_leader_that_resumes_is_refused_by_the_fencing_token(cluster: Cluster) -> None:
    cluster.start("a", "b")
    cluster.register("a", "x", "y")
    old = cluster.leader(1)
    new = "b" if old == "a" else "a"
    cluster[old].submit_update(submission("x", 1, delta(1.0)))
    cluster.settle()
    # the leader is paused (no ticks) past its lease; the other replica takes over
    cluster.clock.advance(TTL + 0.5)
    cluster[new].tick()
    cluster.settle()
    assert cluster.leader(1) == new
    # the old leader resumes and takes the last update before its own tick runs:
    # it folds it, finds the round complete and tries to close it with its old token
    ack = cluster[old].submit_update(submission("y", 1, delta(3.0)))
    assert not ack.duplicate
    assert cluster[old].fenced_writes == 1
    cluster.settle()
    done = cluster.round(1)
    assert done.status is RoundStatus.COMPLETED and done.participating_clients == 2
    np.testing.assert_allclose(cluster[new].global_weights()["w"], np.full((2, 3), 2.0))
    cluster.tick_all()
    assert cluster[old].status().completed_rounds == 1  # it follows the database again
    np.testing.assert_allclose(cluster[old].global_weights()["w"], np.full((2, 3), 2.0))


def test_a_leader_that_dies_before_the_deadline_is_replaced_and_the_round_fails_on_time(
    cluster: Cluster,
) -> None:
    cluster.start("a", "b")
    cluster.register("a", "x", "y")
    leader = cluster.leader(1)
    other = "b" if leader == "a" else "a"
    cluster[other].submit_update(submission("x", 1, delta(1.0)))
    cluster.settle()
    cluster.crash(leader)
    cluster.clock.advance(61.0)  # past the round's deadline and the lease
    cluster.tick_all()  # takes the round over, then fails it: 1 of the 2 required updates
    assert cluster.round(1).status is RoundStatus.FAILED
    assert cluster.round(2).status is RoundStatus.OPEN
    assert cluster.leader(2) == other


def test_replicas_starting_together_create_the_run_once(cluster: Cluster) -> None:
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            cluster.start(name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [r.round_number for r in cluster.world.runs.list_rounds("r")] == [0]


def test_central_dp_is_refused_on_a_cluster(cluster: Cluster) -> None:
    cluster.config = replace(cluster.config, central_dp=CentralDpConfig(1.0, 1.0))
    with pytest.raises(ConfigError, match="cluster"):
        cluster.start("a")


def test_a_lease_store_that_restarts_empty_cannot_fool_the_fencing(cluster: Cluster) -> None:
    """Redis keeps no data here: after a restart its lease tokens count from 1 again.
    The database issues the fencing tokens, so the stale leader is still refused."""
    cluster.start("a", "b")
    cluster.register("a", "x", "y")
    old = cluster.leader(1)
    new = "b" if old == "a" else "a"
    cluster[old].submit_update(submission("x", 1, delta(1.0)))
    cluster.settle()
    cluster.leases._held.clear()  # the lease store restarts empty ...
    cluster.leases._newest.clear()  # ... and forgets every token it issued
    cluster[new].tick()  # takes the round over: its lease token is 1 again
    cluster.settle()
    assert cluster.leader(1) == new
    ack = cluster[old].submit_update(submission("y", 1, delta(3.0)))  # the old leader folds
    assert not ack.duplicate
    assert cluster[old].fenced_writes == 1  # and its close is refused all the same
    cluster.settle()
    done = cluster.round(1)
    assert done.status is RoundStatus.COMPLETED and done.participating_clients == 2
    np.testing.assert_allclose(cluster[new].global_weights()["w"], np.full((2, 3), 2.0))
