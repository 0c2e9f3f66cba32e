"""HAProxy in front of stand-in backends (``health_backend.py``), for the load-balancer
tests: real processes on 127.0.0.1, their logs printed when a test fails."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedlearn_testing import free_port

from fedlearn.cli.haproxy import ReplicaEndpoint, haproxy_config, server_states

__all__ = ["Backend", "LoadBalancerRig", "wait_until"]

BACKEND_SCRIPT = Path(__file__).with_name("health_backend.py")
LOG_TAIL_CHARS = 4_000


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` held; AssertionError naming ``what`` after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.02)
    return time.monotonic() - start


@dataclass
class Backend:
    name: str
    endpoint: ReplicaEndpoint
    process: subprocess.Popen[bytes]

    def readyz(self) -> int:
        """The status code of the backend's /readyz (0: no answer)."""
        try:
            url = f"http://{self.endpoint.http_address}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0


class LoadBalancerRig:
    """Starts backends and one HAProxy; ``stop_all`` kills whatever still runs.

    It has the ``log_tails()`` of the integration ``Processes``, so a test that sets it
    as ``request.node.fedlearn_processes`` gets the logs in its failure report.
    """

    def __init__(self, folder: Path, haproxy: str) -> None:
        self.folder = folder
        self.haproxy = haproxy
        self.backends: dict[str, Backend] = {}
        self._children: list[tuple[str, subprocess.Popen[bytes], Path, IO[bytes]]] = []
        self.lb_address = ""
        self.stats_address = ""
        folder.mkdir(parents=True, exist_ok=True)

    def _start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log_path = self.folder / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        self._children.append((name, process, log_path, log))
        return process

    def start_backends(self, *names: str, timeout_s: float = 30) -> None:
        """Start one backend per name and wait until each /readyz answers 200."""
        for name in names:
            grpc_port, http_port = free_port(), free_port()
            endpoint = ReplicaEndpoint(name, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}")
            command = [sys.executable, str(BACKEND_SCRIPT), name, str(grpc_port), str(http_port)]
            self.backends[name] = Backend(name, endpoint, self._start(name, command))
        for backend in self.backends.values():
            wait_until(
                lambda b=backend: b.readyz() == 200, timeout_s=timeout_s, what=f"{backend.name}"
            )

    def start_haproxy(self, *, timeout_s: float = 15, **options: int) -> None:
        """HAProxy over every backend, with a stats page; returns once all are UP."""
        self.lb_address = f"127.0.0.1:{free_port()}"
        self.stats_address = f"127.0.0.1:{free_port()}"
        config = self.folder / "haproxy.cfg"
        config.write_text(
            haproxy_config(
                lb_address=self.lb_address,
                replicas=[b.endpoint for b in self.backends.values()],
                stats_address=self.stats_address,
                **options,
            )
        )
        self._start("haproxy", [self.haproxy, "-f", str(config), "-db"])
        wanted = dict.fromkeys(self.backends, "UP")
        wait_until(
            lambda: self.server_states() == wanted,
            timeout_s=timeout_s,
            what="HAProxy sees every backend UP",
        )

    def server_states(self) -> dict[str, str]:
        """Each backend server's status on HAProxy's stats page (UP, DOWN, ...)."""
        return server_states(self.stats_address)

    def stop_all(self) -> None:
        for _, process, _, _ in self._children:
            if process.poll() is None:
                process.kill()
        for _, process, _, log in self._children:
            with suppress(subprocess.TimeoutExpired):
                process.wait(10)
            log.close()

    def log_tails(self) -> list[tuple[str, str]]:
        tails = []
        for name, process, log_path, _ in self._children:
            rc = process.poll()
            head = f"[exit code {rc}]" if rc is not None else "[still running]"
            text = log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            tails.append((name, f"{head}\n{text}"))
        return tails
