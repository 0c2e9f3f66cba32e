"""HAProxy, configured by ``haproxy_config``, in front of two real gRPC servers.

Each backend (``health_backend.py``, its own process) serves the gRPC health service
and a ``HealthHttpServer`` whose /readyz makes a gRPC health call to its own port, as a
coordinator replica does. A ``Check`` for ``backend-a`` through the load balancer
says which backend answered: SERVING from ``a``, NOT_FOUND (SERVICE_UNKNOWN) from
``b``. So the tests see gRPC pass through HAProxy's HTTP/2 frontend, the calls
alternate between the backends, and a backend that turns unready, freezes or dies
stops getting calls within about two seconds.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from haproxy_testing import require_haproxy
from lb_harness import LoadBalancerRig, wait_until

from fedlearn.transport.health_probe import GrpcHealthProbe, grpc_health_status

pytestmark = pytest.mark.timeout(60)

FROM_A, FROM_B = "SERVING", "SERVICE_UNKNOWN"  # the answers to a Check of "backend-a"


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path) -> LoadBalancerRig:
    """Backends ``a`` and ``b`` behind HAProxy, every server UP."""
    lb = LoadBalancerRig(tmp_path / "lb", require_haproxy())
    request.node.fedlearn_processes = lb  # logs in the failure report (conftest hook)
    try:
        lb.start_backends("a", "b")
        lb.start_haproxy()
        yield lb
    finally:
        lb.stop_all()


def _answers(lb: LoadBalancerRig, calls: int, *, timeout_s: float = 2.0) -> list[str]:
    with GrpcHealthProbe(lb.lb_address) as probe:
        return [probe.status("backend-a", timeout_s=timeout_s) for _ in range(calls)]


def _only_a_answers(lb: LoadBalancerRig, probe: GrpcHealthProbe) -> bool:
    """Whether the next 6 calls all reach ``a`` (round robin would send 3 to ``b``)."""
    return all(probe.status("backend-a", timeout_s=1.0) == FROM_A for _ in range(6))


def test_grpc_health_checks_pass_through_haproxy(rig):
    assert grpc_health_status(rig.lb_address) == "SERVING"
    assert grpc_health_status(rig.lb_address, "no.such.Service") == "SERVICE_UNKNOWN"


def test_haproxy_sends_each_call_to_the_next_backend_in_turn(rig):
    counts = Counter(_answers(rig, 20))

    assert set(counts) == {FROM_A, FROM_B}, counts
    assert counts[FROM_A] >= 8 and counts[FROM_B] >= 8, counts  # 10 and 10 when idle


def test_a_backend_whose_readyz_fails_is_taken_out_within_two_seconds_and_comes_back(rig):
    b = rig.backends["b"]
    started = time.monotonic()
    b.process.send_signal(signal.SIGUSR1)  # b's gRPC health: NOT_SERVING
    wait_until(lambda: b.readyz() == 503, timeout_s=5, what="b's /readyz turns 503")

    with GrpcHealthProbe(rig.lb_address) as probe:
        wait_until(lambda: _only_a_answers(rig, probe), timeout_s=2.0, what="b taken out")
        taken_out = time.monotonic() - started
        assert taken_out < 2.5
        assert rig.server_states()["b"] == "DOWN"
        assert Counter(_answers(rig, 10)) == {FROM_A: 10}

        b.process.send_signal(signal.SIGUSR2)  # SERVING again
        back = wait_until(
            lambda: probe.status("backend-a", timeout_s=1.0) == FROM_B,
            timeout_s=5.0,
            what="b back in rotation",
        )
    print(f"b out after {taken_out:.2f} s, back after {back:.2f} s")


def test_a_frozen_backend_is_taken_out_and_its_waiting_call_cut_within_two_seconds(rig):
    b = rig.backends["b"]
    channel = grpc.insecure_channel(rig.lb_address)
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="backend-a")
    for _ in range(4):  # HAProxy now holds open HTTP/2 connections to both backends
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    b.process.send_signal(signal.SIGSTOP)  # its sockets stay open; nothing answers
    try:
        outcomes = []
        started = time.monotonic()
        for _ in range(6):  # round robin: the first or second call goes to frozen b
            t = time.monotonic()
            try:
                stub.Check(request, timeout=30)
                outcomes.append(("ok", round(time.monotonic() - t, 2)))
            except grpc.RpcError as exc:
                outcomes.append((exc.code().name, round(time.monotonic() - t, 2)))
        elapsed = time.monotonic() - started

        # The call that reached b was cut when HAProxy took b out (UNAVAILABLE, which
        # clients retry), or re-sent to a; it did not wait for the 120 s timeout.
        assert all(seconds < 3.0 for _, seconds in outcomes), outcomes
        assert [code for code, _ in outcomes if code != "ok"] in ([], ["UNAVAILABLE"]), outcomes
        assert elapsed < 3.5, outcomes
        assert rig.server_states()["b"] == "DOWN"
        assert Counter(_answers(rig, 10)) == {FROM_A: 10}
    finally:
        b.process.send_signal(signal.SIGCONT)
        channel.close()
    wait_until(lambda: rig.server_states()["b"] == "UP", timeout_s=10, what="b back")
    print(f"frozen b: {outcomes}")


def test_calls_meant_for_a_killed_backend_are_retried_on_the_other_at_once(rig):
    b = rig.backends["b"]
    b.process.kill()
    b.process.wait(10)

    # No check has noticed yet (inter 500 ms), but HAProxy's retry-on conn-failure
    # and redispatch send every call that would have gone to b to a instead.
    started = time.monotonic()
    answers = _answers(rig, 20)
    elapsed = time.monotonic() - started

    assert Counter(answers) == {FROM_A: 20}, answers
    assert elapsed < 2.0
    wait_until(lambda: rig.server_states()["b"] == "DOWN", timeout_s=3, what="b marked DOWN")
