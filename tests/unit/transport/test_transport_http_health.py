"""``HealthHttpServer``: /healthz and /readyz answer 200 or 503 from their checks."""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time

import pytest

from fedlearn.errors import ConfigError
from fedlearn.transport.http_health import HealthHttpServer, run_checks


def _request(port: int, method: str, path: str) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, json.loads(body) if body else {}
    finally:
        conn.close()


@pytest.fixture
def problems():
    """What the checks report: tests edit these lists while the server runs."""
    return {"live": [], "ready": []}


@pytest.fixture
def server(problems):
    with HealthHttpServer(
        "127.0.0.1:0",
        live=lambda: list(problems["live"]),
        ready=lambda: list(problems["ready"]),
    ) as running:
        yield running


def test_healthz_and_readyz_answer_200_ok_when_their_checks_find_nothing(server):
    for path in ("/healthz", "/readyz", "/readyz?verbose=1"):
        status, headers, body = _request(server.port, "GET", path)

        assert status == 200, path
        assert body == {"status": "ok"}
        assert headers["content-type"] == "application/json"


def test_readyz_answers_503_with_the_problems_while_liveness_stays_ok(server, problems):
    problems["ready"] += ["database unreachable", "gRPC health: NOT_SERVING"]

    status, _, body = _request(server.port, "GET", "/readyz")
    live_status, _, _ = _request(server.port, "GET", "/healthz")

    assert status == 503
    assert body == {
        "status": "unavailable",
        "problems": ["database unreachable", "gRPC health: NOT_SERVING"],
    }
    assert live_status == 200


def test_each_endpoint_follows_its_check_as_it_changes(server, problems):
    problems["live"].append("event loop stuck")
    assert _request(server.port, "GET", "/healthz")[0] == 503

    problems["live"].clear()
    assert _request(server.port, "GET", "/healthz")[0] == 200


def test_a_check_that_raises_counts_as_a_problem_named_by_its_message():
    def broken() -> list[str]:
        raise RuntimeError("redis timed out")

    with HealthHttpServer("127.0.0.1:0", live=list, ready=broken) as server:
        status, _, body = _request(server.port, "GET", "/readyz")
        live_status, _, _ = _request(server.port, "GET", "/healthz")

    assert status == 503
    assert body == {"status": "unavailable", "problems": ["RuntimeError: redis timed out"]}
    assert live_status == 200


def test_run_checks_names_an_exception_without_a_message_by_its_type():
    def broken() -> list[str]:
        raise TimeoutError

    assert run_checks(broken) == ["TimeoutError"]
    assert run_checks(lambda: ["a", "b"]) == ["a", "b"]
    assert run_checks(list) == []


def test_other_paths_are_404(server):
    for path in ("/", "/health", "/readyz/extra", "/metrics"):
        status, _, body = _request(server.port, "GET", path)

        assert status == 404, path
        assert body["status"] == "not found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_other_methods_are_405_with_an_allow_header(server, method):
    status, headers, _ = _request(server.port, method, "/readyz")

    assert status == 405
    assert headers["allow"] == "GET"


def test_requests_write_nothing_to_stderr(server, capfd):
    for _ in range(3):
        _request(server.port, "GET", "/readyz")
        _request(server.port, "GET", "/nowhere")
        _request(server.port, "POST", "/readyz")

    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_a_prober_that_resets_its_connection_writes_nothing_to_stderr(server, capfd):
    # HAProxy resets a check connection that timed out, with a request half read.
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(0.3)

    assert _request(server.port, "GET", "/readyz")[0] == 200
    assert capfd.readouterr().err == ""


def test_port_zero_binds_a_free_port_that_stop_releases():
    server = HealthHttpServer("127.0.0.1:0", live=list, ready=list)
    server.start()
    port = server.port
    assert port > 0
    assert server.address == f"127.0.0.1:{port}"
    assert _request(port, "GET", "/healthz")[0] == 200

    server.stop()
    server.stop()  # twice is fine

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_stop_before_start_closes_the_socket():
    server = HealthHttpServer("127.0.0.1:0", live=list, ready=list)
    server.stop()

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def test_a_port_in_use_or_a_malformed_address_is_a_config_error():
    with (
        HealthHttpServer("127.0.0.1:0", live=list, ready=list) as server,
        pytest.raises(ConfigError, match="could not bind"),
    ):
        HealthHttpServer(f"127.0.0.1:{server.port}", live=list, ready=list)

    for address in ("127.0.0.1", "127.0.0.1:http", ""):
        with pytest.raises(ConfigError, match="host:port"):
            HealthHttpServer(address, live=list, ready=list)
