"""A stand-in for a coordinator replica, run as its own process by the load-balancer tests.

    python health_backend.py NAME GRPC_PORT HTTP_PORT

serves, on 127.0.0.1, the gRPC health service (``""`` and ``backend-NAME`` SERVING,
so a ``Check`` for ``backend-a`` tells which backend answered: SERVING from ``a``,
NOT_FOUND from any other), and ``/healthz`` and ``/readyz`` on ``HTTP_PORT`` through
``HealthHttpServer``. Like a replica's, its ``/readyz`` makes a real gRPC health call
to its own gRPC port. SIGUSR1 sets the whole server NOT_SERVING, SIGUSR2 SERVING again.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedlearn.transport.health_probe import SERVING, GrpcHealthProbe
from fedlearn.transport.http_health import HealthHttpServer


def main(name: str, grpc_port: int, http_port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    server.start()
    for service in ("", f"backend-{name}"):
        servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    probe = GrpcHealthProbe(f"127.0.0.1:{grpc_port}")

    def ready() -> list[str]:
        status = probe.status("", timeout_s=0.5)
        return [] if status == SERVING else [f"gRPC health check: {status}"]

    http = HealthHttpServer(f"127.0.0.1:{http_port}", live=list, ready=ready)
    stop = threading.Event()

    def set_all(status: int) -> None:
        servicer.set("", status)

    signal.signal(signal.SIGUSR1, lambda *_: set_all(health_pb2.HealthCheckResponse.NOT_SERVING))
    signal.signal(signal.SIGUSR2, lambda *_: set_all(health_pb2.HealthCheckResponse.SERVING))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    http.start()
    print(f"backend {name}: gRPC {grpc_port}, HTTP {http_port}", flush=True)
    while not stop.wait(0.2):
        pass
    http.stop()
    probe.close()
    server.stop(0)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
