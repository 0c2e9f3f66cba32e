"""Ask a gRPC server how it is, with the standard health-checking protocol.

``grpc_health_status("127.0.0.1:50051")`` makes one real ``grpc.health.v1.Health/Check``
call and names the answer. Run as a module it is a health command for containers
(Docker ``HEALTHCHECK``, ECS ``healthCheck``, a Kubernetes ``exec`` probe)::

    python -m fedlearn.transport.health_probe 127.0.0.1:50051 --timeout 2

exits 0 when the answer is ``SERVING`` and 1 otherwise, printing the status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = [
    "NOT_SERVING",
    "SERVICE_UNKNOWN",
    "SERVING",
    "UNKNOWN",
    "UNREACHABLE",
    "GrpcHealthProbe",
    "grpc_health_status",
    "main",
]

SERVING = "SERVING"
NOT_SERVING = "NOT_SERVING"
SERVICE_UNKNOWN = "SERVICE_UNKNOWN"
"""The server has a health service but does not know the service name (NOT_FOUND)."""
UNKNOWN = "UNKNOWN"
UNREACHABLE = "UNREACHABLE"
"""No answer: connection refused, timeout, or any other RPC failure."""

_NAMES = {
    health_pb2.HealthCheckResponse.UNKNOWN: UNKNOWN,
    health_pb2.HealthCheckResponse.SERVING: SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING: NOT_SERVING,
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: SERVICE_UNKNOWN,
}

# gRPC backs off reconnecting up to 2 minutes by default; a probe must notice a server
# that came back within about a second.
_RECONNECT_QUICKLY = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class GrpcHealthProbe:
    """One channel to ``target`` for repeated health checks (a readiness endpoint
    asks every half second; a fresh channel each time would be a new TCP and HTTP/2
    handshake each time). Never raises for an unhealthy or absent server."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._channel = grpc.insecure_channel(target, options=_RECONNECT_QUICKLY)
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    def status(self, service: str = "", *, timeout_s: float = 1.0) -> str:
        """``SERVING``, ``NOT_SERVING``, ``SERVICE_UNKNOWN``, ``UNKNOWN`` or ``UNREACHABLE``."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = self._stub.Check(request, timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return SERVICE_UNKNOWN if code == grpc.StatusCode.NOT_FOUND else UNREACHABLE
        return _NAMES.get(response.status, UNKNOWN)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcHealthProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grpc_health_status(target: str, service: str = "", timeout_s: float = 1.0) -> str:
    """One ``grpc.health.v1.Health/Check`` call to ``target`` on a channel of its own."""
    with GrpcHealthProbe(target) as probe:
        return probe.status(service, timeout_s=timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fedlearn.transport.health_probe",
        description="Exit 0 if a gRPC server reports SERVING (grpc.health.v1), else 1.",
    )
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds to wait")
    args = parser.parse_args(argv)
    status = grpc_health_status(args.target, args.service, args.timeout)
    print(status)
    return 0 if status == SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
