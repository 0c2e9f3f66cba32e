"""The load generator's count of the retries GrpcCoordinatorClient logs."""

import logging

import grpc

from benchmarks.loadgen import LoadStats, _RetryCounter
from fedlearn.transport.client import GrpcCoordinatorClient


def test_retries_are_counted_by_call_and_status_and_busy_refusals_as_busy():
    stats = LoadStats()
    log = logging.getLogger(GrpcCoordinatorClient.__module__)
    counter = _RetryCounter(stats)
    log.addHandler(counter)
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        # the two messages GrpcCoordinatorClient._call logs before it sleeps and retries
        for delay in (0.25, 0.36, 0.48):
            log.debug("%s refused as busy, retrying in %.2f s", "submit", delay)
        log.debug(
            "%s failed (%s), retrying in %.2f s", "download", grpc.StatusCode.UNAVAILABLE, 0.2
        )
    finally:
        log.removeHandler(counter)
        log.setLevel(level)

    assert dict(stats.retries) == {"submit: busy": 3, "download: UNAVAILABLE": 1}
