"""``fedlearn cluster`` builds the settings of a local cluster from its options, and a
replica's command line carries every cluster flag."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cli_fakes import Built, invoke

from fedlearn.cli import cluster_cmd
from fedlearn.cli.haproxy import ReplicaEndpoint
from fedlearn.cli.local_cluster import ClusterSettings, LocalCluster, replica_command


@pytest.fixture
def cluster_settings(monkeypatch):
    """``fedlearn cluster`` with ``LocalCluster`` replaced: the settings it was given."""
    seen: list[ClusterSettings] = []

    class FakeCluster:
        def __init__(self, settings: ClusterSettings) -> None:
            seen.append(settings)

        def __enter__(self):
            raise Built

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cluster_cmd, "LocalCluster", FakeCluster)
    monkeypatch.delenv("FEDLEARN_DATABASE_URL", raising=False)
    monkeypatch.delenv("FEDLEARN_REDIS_URL", raising=False)
    return seen


def _value(args, flag):
    return args[args.index(flag) + 1]


def test_cluster_defaults_to_three_replicas_on_local_postgres_and_redis(
    monkeypatch, capsys, cluster_settings
):
    invoke(monkeypatch, capsys, "cluster", "--log-level", "warning")

    (settings,) = cluster_settings
    assert settings.replicas == 3
    assert settings.lb_address == "127.0.0.1:50051"
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.work_dir == Path("fedlearn-cluster")
    assert settings.stats_address is None
    assert "--rounds" not in settings.coordinator_args  # the coordinator's own defaults


def test_cluster_forwards_run_options_to_every_coordinator(monkeypatch, capsys, cluster_settings):
    invoke(
        monkeypatch, capsys, "cluster", "--log-level", "warning", "--replicas", 2,
        "--lb-address", "127.0.0.1:6000", "--rounds", 4, "--min-clients", 3,
        "--model", "mlp", "--run-id", "demo", "--work-dir", "/tmp/c", "--stats-address",
        "127.0.0.1:8404",
    )  # fmt: skip

    (settings,) = cluster_settings
    args = list(settings.coordinator_args)
    assert settings.replicas == 2
    assert settings.lb_address == "127.0.0.1:6000"
    assert settings.work_dir == Path("/tmp/c")
    assert settings.stats_address == "127.0.0.1:8404"
    assert (_value(args, "--rounds"), _value(args, "--min-clients")) == ("4", "3")
    assert (_value(args, "--model"), _value(args, "--run-id")) == ("mlp", "demo")
    assert _value(args, "--log-level") == "warning"


def test_cluster_reads_the_database_and_redis_urls_from_the_environment(
    monkeypatch, capsys, cluster_settings
):
    monkeypatch.setenv("FEDLEARN_DATABASE_URL", "postgresql+psycopg://u@db:5432/fl")
    monkeypatch.setenv("FEDLEARN_REDIS_URL", "redis://cache:6379/2")

    invoke(monkeypatch, capsys, "cluster", "--log-level", "warning")

    (settings,) = cluster_settings
    assert settings.database_url == "postgresql+psycopg://u@db:5432/fl"
    assert settings.redis_url == "redis://cache:6379/2"


def test_cluster_refuses_zero_replicas_before_starting_anything(
    monkeypatch, capsys, cluster_settings
):
    code, err = invoke(monkeypatch, capsys, "cluster", "--replicas", 0)

    assert code == 2
    assert cluster_settings == []
    assert "--replicas" in err


def test_a_replica_runs_fedlearn_coordinator_with_every_cluster_flag(tmp_path):
    settings = ClusterSettings(
        database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        redis_url="redis://127.0.0.1:6379/0",
        work_dir=tmp_path,
        coordinator_args=("--rounds", "2"),
    )
    endpoint = ReplicaEndpoint("replica-1", "127.0.0.1:7001", "127.0.0.1:7002")

    command = replica_command(endpoint, settings, port_file=tmp_path / "replica-1.port")

    assert command[:4] == [sys.executable, "-m", "fedlearn", "coordinator"]
    assert _value(command, "--address") == "127.0.0.1:7001"
    assert _value(command, "--http-address") == "127.0.0.1:7002"
    assert _value(command, "--replica-id") == "replica-1"
    assert _value(command, "--database-url") == settings.database_url
    assert _value(command, "--redis-url") == settings.redis_url
    assert _value(command, "--model-dir") == str(tmp_path / "models")  # shared by all
    assert _value(command, "--port-file") == str(tmp_path / "replica-1.port")
    assert command[-2:] == ["--rounds", "2"]


def test_a_local_cluster_chooses_distinct_ports_before_it_starts(tmp_path):
    settings = ClusterSettings(
        database_url="sqlite://", redis_url="redis://127.0.0.1:6379/0", work_dir=tmp_path
    )

    cluster = LocalCluster(settings)

    names = [r.name for r in cluster.replicas]
    assert names == ["replica-0", "replica-1", "replica-2"]
    ports = [cluster.lb_address] + [
        a for r in cluster.replicas for a in (r.grpc_address, r.http_address)
    ]
    assert len(set(ports)) == 7
    assert not cluster.lb_address.endswith(":0")
    cluster.stop()  # never started: nothing to do
