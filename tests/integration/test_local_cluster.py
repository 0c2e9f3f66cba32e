"""``LocalCluster``: three ``fedlearn coordinator`` replicas on PostgreSQL and Redis behind
HAProxy start, and the load balancer answers the gRPC health protocol for them.

(The failover tests, with clients and killed or paused leaders, are in
``test_cluster_failover.py``.)
"""

from __future__ import annotations

import signal
import uuid

import pytest
from haproxy_testing import require_haproxy
from lb_harness import wait_until

from fedlearn.cli.local_cluster import HAPROXY, ClusterSettings, LocalCluster
from fedlearn.transport.health_probe import grpc_health_status

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

SERVICE = "fedlearn.v1.FederatedLearning"


def test_local_cluster_serves_grpc_health_through_haproxy_on_postgres_and_redis(
    request, tmp_path, cluster_database, cluster_redis, child_env
):
    require_haproxy()
    run_id = f"cluster-{uuid.uuid4().hex[:8]}"  # its own leases and keys in the shared Redis
    settings = ClusterSettings(
        database_url=cluster_database,
        redis_url=cluster_redis,
        work_dir=tmp_path / "cluster",
        replicas=3,
        coordinator_args=("--run-id", run_id, "--model", "mlp", "--rounds", "1",
                          "--min-clients", "2", "--log-level", "info"),
        env=child_env,
        start_timeout_s=150,
    )  # fmt: skip
    cluster = LocalCluster(settings)
    request.node.fedlearn_processes = _Logs(cluster)  # logs in the failure report
    with cluster:
        names = [r.name for r in cluster.replicas]
        assert names == ["replica-0", "replica-1", "replica-2"]
        assert len({cluster.pid(r.name) for r in cluster.replicas} | {cluster.pid(HAPROXY)}) == 4
        assert all(cluster.ready(r.name) for r in cluster.replicas)
        assert cluster.lb_states() == dict.fromkeys(names, "UP")
        assert grpc_health_status(cluster.lb_address) == "SERVING"
        assert grpc_health_status(cluster.lb_address, SERVICE) == "SERVING"
        for replica in cluster.replicas:  # each replica serves on its own too
            assert grpc_health_status(replica.grpc_address, SERVICE) == "SERVING"

        # One replica gone: HAProxy keeps answering through the two others.
        cluster.kill("replica-1", signal.SIGKILL)
        wait_until(lambda: not cluster.running("replica-1"), timeout_s=10, what="replica-1 dies")
        assert not cluster.ready("replica-1")
        statuses = [grpc_health_status(cluster.lb_address, SERVICE) for _ in range(6)]
        assert statuses == ["SERVING"] * 6
        assert cluster.exited() == ["replica-1"]
        wait_until(
            lambda: cluster.lb_states()["replica-1"] == "DOWN", timeout_s=3, what="HAProxy drops it"
        )

        # Restarted on the same ports, it is back in HAProxy's rotation.
        killed = cluster.pid("replica-1")
        cluster.restart("replica-1")
        cluster.wait_ready(["replica-1"], timeout_s=120)
        assert cluster.pid("replica-1") != killed
        assert cluster.lb_states() == dict.fromkeys(names, "UP")
        assert cluster.exited() == []


class _Logs:
    """The cluster's process logs, for the integration conftest's failure report."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def log_tails(self) -> list[tuple[str, str]]:
        names = [*(r.name for r in self.cluster.replicas), HAPROXY]
        return [
            (name, self.cluster.log_path(name).read_text(errors="replace")[-6_000:])
            for name in names
            if self.cluster.log_path(name).exists()
        ]
