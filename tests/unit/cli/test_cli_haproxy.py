"""``haproxy_config``: HTTP/2 both ways, per-call round robin, active /readyz checks;
and the real ``haproxy -c`` accepts what it writes."""

from __future__ import annotations

import dataclasses
import re

import pytest
from haproxy_testing import require_haproxy

from fedlearn.cli.haproxy import (
    ReplicaEndpoint,
    check_haproxy_config,
    haproxy_config,
    haproxy_version,
    parse_server_states,
    split_address,
)
from fedlearn.errors import ConfigError

REPLICAS = (
    ReplicaEndpoint("replica-0", "127.0.0.1:50061", "127.0.0.1:50071"),
    ReplicaEndpoint("replica-1", "127.0.0.1:50062", "127.0.0.1:50072"),
    ReplicaEndpoint("replica-2", "127.0.0.1:50063", "127.0.0.1:50073"),
)


def _lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def _section(text: str, header: str) -> list[str]:
    lines = _lines(text)
    start = lines.index(header)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
    return lines[start + 1 : end]


def test_the_frontend_takes_grpc_as_cleartext_http2_on_the_lb_address():
    text = haproxy_config(lb_address="127.0.0.1:50051", replicas=REPLICAS)

    assert "mode http" in _section(text, "defaults")
    assert _section(text, "frontend grpc") == [
        "bind 127.0.0.1:50051 proto h2",
        "default_backend coordinators",
    ]


def test_every_replica_gets_http2_calls_and_an_http1_check_of_readyz_on_its_http_port():
    text = haproxy_config(lb_address="127.0.0.1:50051", replicas=REPLICAS)
    backend = _section(text, "backend coordinators")

    assert "balance roundrobin" in backend
    assert "option httpchk GET /readyz" in backend
    assert "http-check expect status 200" in backend
    assert "default-server inter 500 fall 2 rise 1 on-marked-down shutdown-sessions" in backend
    servers = [line for line in backend if line.startswith("server ")]
    assert servers == [
        "server replica-0 127.0.0.1:50061 proto h2 check port 50071 check-proto h1",
        "server replica-1 127.0.0.1:50062 proto h2 check port 50072 check-proto h1",
        "server replica-2 127.0.0.1:50063 proto h2 check port 50073 check-proto h1",
    ]


def test_timeouts_allow_long_polls_and_uploads_and_failed_calls_are_retried_elsewhere():
    text = haproxy_config(
        lb_address="127.0.0.1:50051", replicas=REPLICAS, check_interval_ms=250, check_timeout_ms=400
    )
    defaults = _section(text, "defaults")

    assert {"timeout client 120s", "timeout server 120s", "timeout check 400ms"} <= set(defaults)
    assert "retry-on conn-failure empty-response response-timeout" in defaults
    assert "option redispatch 1" in defaults
    assert any(re.fullmatch(r"retries [1-9]", line) for line in defaults)
    assert "default-server inter 250 fall 2 rise 1 on-marked-down shutdown-sessions" in _lines(text)


def test_the_stats_page_is_there_only_when_asked_for():
    without = haproxy_config(lb_address="127.0.0.1:50051", replicas=REPLICAS)
    with_stats = haproxy_config(
        lb_address="127.0.0.1:50051", replicas=REPLICAS, stats_address="127.0.0.1:8404"
    )

    assert "listen stats" not in _lines(without)
    assert "bind 127.0.0.1:8404" in _section(with_stats, "listen stats")


@pytest.mark.parametrize(
    ("replicas", "message"),
    [
        ((), "at least one replica"),
        ((REPLICAS[0], REPLICAS[0]), "names must differ"),
        ((dataclasses.replace(REPLICAS[0], name="replica 0"),), "use letters, digits"),
        ((dataclasses.replace(REPLICAS[0], grpc_address="127.0.0.1"),), "host:port"),
        ((dataclasses.replace(REPLICAS[0], http_address="127.0.0.1:x"),), "host:port"),
    ],
)
def test_replicas_that_cannot_work_are_refused(replicas, message):
    with pytest.raises(ConfigError, match=message):
        haproxy_config(lb_address="127.0.0.1:50051", replicas=replicas)


def test_a_malformed_lb_address_is_refused():
    with pytest.raises(ConfigError, match="host:port"):
        haproxy_config(lb_address="50051", replicas=REPLICAS)


def test_split_address():
    assert split_address("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert split_address("[::1]:0") == ("[::1]", 0)
    for bad in ("", ":80", "host", "host:", "host:99999", "host:-1"):
        with pytest.raises(ConfigError):
            split_address(bad)


def test_haproxy_accepts_the_configuration(tmp_path):
    binary = require_haproxy()
    path = tmp_path / "haproxy.cfg"
    path.write_text(
        haproxy_config(
            lb_address="127.0.0.1:50051", replicas=REPLICAS, stats_address="127.0.0.1:8404"
        )
    )

    check_haproxy_config(path, binary)  # raises with HAProxy's complaint if refused
    assert re.match(r"\d+\.\d+", haproxy_version(binary))


def test_a_configuration_haproxy_refuses_is_a_config_error_with_its_reason(tmp_path):
    binary = require_haproxy()
    path = tmp_path / "haproxy.cfg"
    text = haproxy_config(lb_address="127.0.0.1:50051", replicas=REPLICAS)
    path.write_text(text.replace("balance roundrobin", "balance no-such-algorithm"))

    with pytest.raises(ConfigError, match="balance only supports"):
        check_haproxy_config(path, binary)


# The first columns of HAProxy 2.6's stats CSV (``/;csv``), one replica going down.
STATS_CSV = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
grpc,FRONTEND,,,0,1,4096,12,0,0,0,0,0,,,,,OPEN,
coordinators,replica-0,0,0,0,1,,6,0,0,,0,,0,0,0,0,UP,1
coordinators,replica-1,0,0,0,1,,6,0,0,,0,,0,0,0,0,DOWN 1/2,1
coordinators,replica-2,0,0,0,1,,0,0,0,,0,,0,0,0,0,DOWN,1
coordinators,BACKEND,0,0,0,1,410,12,0,0,0,0,,0,0,0,0,UP,2
stats,FRONTEND,,,1,1,4096,3,0,0,0,0,0,,,,,OPEN,
"""


def test_the_stats_csv_gives_each_replicas_state():
    assert parse_server_states(STATS_CSV) == {
        "replica-0": "UP",
        "replica-1": "DOWN",
        "replica-2": "DOWN",
    }
    assert parse_server_states("") == {}
