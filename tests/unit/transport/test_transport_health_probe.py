"""``grpc_health_status`` makes a real grpc.health.v1 call and names the answer."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from fedlearn_testing import free_port
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedlearn.transport.health_probe import GrpcHealthProbe, grpc_health_status, main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def health_server():
    """A gRPC server on 127.0.0.1 that runs only the health service."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("fedlearn.v1.FederatedLearning", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("draining", health_pb2.HealthCheckResponse.NOT_SERVING)
    servicer.set("starting", health_pb2.HealthCheckResponse.UNKNOWN)
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def test_a_serving_server_is_serving(health_server):
    target, _ = health_server

    assert grpc_health_status(target) == "SERVING"
    assert grpc_health_status(target, "fedlearn.v1.FederatedLearning") == "SERVING"


def test_each_status_of_the_protocol_is_named(health_server):
    target, _ = health_server

    assert grpc_health_status(target, "draining") == "NOT_SERVING"
    assert grpc_health_status(target, "starting") == "UNKNOWN"
    assert grpc_health_status(target, "no.such.Service") == "SERVICE_UNKNOWN"


def test_a_probe_follows_the_server_when_its_status_changes(health_server):
    target, servicer = health_server
    with GrpcHealthProbe(target) as probe:
        assert probe.status() == "SERVING"

        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert probe.status() == "NOT_SERVING"

        servicer.enter_graceful_shutdown()  # what a stopping coordinator does
        assert probe.status("fedlearn.v1.FederatedLearning") == "NOT_SERVING"


def test_nothing_listening_is_unreachable_quickly():
    assert grpc_health_status(f"127.0.0.1:{free_port()}", timeout_s=2.0) == "UNREACHABLE"


def test_a_server_without_the_health_service_is_unreachable():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert grpc_health_status(f"127.0.0.1:{port}") == "UNREACHABLE"
    finally:
        server.stop(0)


def test_main_exits_0_only_when_serving_and_prints_the_status(health_server, capsys):
    target, _ = health_server

    assert main([target]) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert main([target, "--service", "draining", "--timeout", "2"]) == 1
    assert capsys.readouterr().out == "NOT_SERVING\n"
    assert main([f"127.0.0.1:{free_port()}", "--timeout", "0.5"]) == 1
    assert capsys.readouterr().out == "UNREACHABLE\n"


def test_the_module_runs_as_a_health_command(health_server):
    target, _ = health_server
    command = [sys.executable, "-m", "fedlearn.transport.health_probe"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=30, check=False
        )

    serving = run(target)
    draining = run(target, "--service", "draining")

    assert (serving.returncode, serving.stdout) == (0, "SERVING\n"), serving.stderr
    assert (draining.returncode, draining.stdout) == (1, "NOT_SERVING\n"), draining.stderr
