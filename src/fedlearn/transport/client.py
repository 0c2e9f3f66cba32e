"""The coordinator as seen by a client, over gRPC, with retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import numpy as np

from fedlearn.core.retry import RetryPolicy, backoff_delays, busy_delays
from fedlearn.core.types import ClientCapabilities
from fedlearn.errors import ChecksumError, TransportError
from fedlearn.service.messages import (
    GlobalModelBlob,
    Registration,
    RollbackOutcome,
    Task,
    TrainingStatus,
    UpdateAck,
    UpdateSubmission,
)
from fedlearn.transport import convert
from fedlearn.transport.chunks import (
    DEFAULT_CHUNK_BYTES,
    Assembler,
    PayloadChecksum,
    chunk_reader,
    data_chunk_message,
    serialized,
    split,
)
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2_grpc as pb_grpc
from fedlearn.transport.status_codes import busy_retry_after_s, error_from_rpc

__all__ = ["GrpcCoordinatorClient", "fetch_status", "request_rollback"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


_CUT_STREAM = ("stream removed", "rst_stream", "socket closed", "connection reset", "broken pipe")
"""What gRPC says (with UNKNOWN or INTERNAL) when the connection under a call was cut,
as a load balancer does when the replica behind it dies mid-call."""


def _is_transient(exc: grpc.RpcError) -> bool:
    code = exc.code() if hasattr(exc, "code") else None
    if code in _TRANSIENT:
        return not _is_size_limit(exc)
    if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
        details = (exc.details() if hasattr(exc, "details") else "") or ""
        return any(marker in details.lower() for marker in _CUT_STREAM)
    return False


def _is_size_limit(exc: grpc.RpcError) -> bool:
    """RESOURCE_EXHAUSTED for an oversized message never heals by retrying."""
    details = exc.details() if hasattr(exc, "details") else ""
    return "larger than max" in (details or "")


class GrpcCoordinatorClient:
    """Implements ``CoordinatorApi`` over one gRPC channel.

    Calls that fail with a transient status are retried with exponential
    backoff and jitter until ``retry.total_s`` is spent; then a
    ``TransportError`` says what failed and for how long it was tried.
    """

    def __init__(
        self,
        target: str,
        *,
        retry: RetryPolicy | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_message_bytes: int = 4 << 20,
        max_payload_bytes: int = 256 << 20,
        call_timeout_s: float = 120.0,
        seed: int | None = None,
    ) -> None:
        self.target = target
        self._retry = retry or RetryPolicy()
        self._chunk_bytes = chunk_bytes
        self._max_payload = max_payload_bytes
        self._timeout = call_timeout_s
        self._rng = np.random.default_rng(seed)
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # reconnect soon after an outage instead of gRPC's default (up to 120 s)
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._stub = pb_grpc.FederatedLearningStub(self._channel)  # type: ignore[no-untyped-call]
        # SubmitUpdate with chunk messages serialized by hand (see data_chunk_message)
        self._submit_stream = self._channel.stream_unary(
            "/fedlearn.v1.FederatedLearning/SubmitUpdate",
            request_serializer=serialized,
            response_deserializer=pb.UpdateAck.FromString,
        )
        # GetGlobalModel with data chunks read as views of gRPC's buffers (see
        # _model_chunk_from_bytes)
        self._model_stream = self._channel.unary_stream(
            "/fedlearn.v1.FederatedLearning/GetGlobalModel",
            request_serializer=pb.ModelRequest.SerializeToString,
            response_deserializer=_model_chunk_from_bytes,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcCoordinatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried while the coordinator is unreachable (for ``total_s``) or
        says it is busy (for ``busy_total_s``: it answered, so that is not unreachable)."""
        started = time.monotonic()
        delays = backoff_delays(self._retry, rng=self._rng)
        busy: Iterator[float] | None = None
        busy_since = started
        while True:
            try:
                return fn()
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                retry_after = busy_retry_after_s(exc)
                if retry_after is not None:
                    if busy is None:
                        busy_since = time.monotonic()
                        busy = busy_delays(self._retry, rng=self._rng, first_s=retry_after)
                    delay = next(busy, None)
                    if delay is None:
                        raise TransportError(
                            f"{what}: coordinator at {self.target} still busy after "
                            f"{time.monotonic() - busy_since:.1f} s ({exc.details()})"
                        ) from exc
                    # it answered: the unreachable budget starts over
                    started, delays = time.monotonic(), backoff_delays(self._retry, rng=self._rng)
                    logger.debug("%s refused as busy, retrying in %.2f s", what, delay)
                    time.sleep(delay)
                    continue
                if not _is_transient(exc):
                    raise error_from_rpc(exc) from exc
                delay = next(delays, None)
                if delay is None:
                    spent = time.monotonic() - started
                    raise TransportError(
                        f"{what}: coordinator at {self.target} unreachable for {spent:.1f} s "
                        f"({code.name if code else 'UNKNOWN'}: {exc.details()})"
                    ) from exc
                logger.debug("%s failed (%s), retrying in %.2f s", what, code, delay)
                time.sleep(delay)

    def register(self, client_id: str | None, capabilities: ClientCapabilities) -> Registration:
        request = pb.ClientRegistration(
            client_id=client_id or "", capabilities=convert.capabilities_to_proto(capabilities)
        )
        reply = self._call(
            "register", lambda: self._stub.RegisterClient(request, timeout=self._timeout)
        )
        return convert.registration_from_proto(reply)

    def poll_task(self, client_id: str, *, wait_s: float) -> Task:
        request = pb.TaskRequest(client_id=client_id, wait_seconds=wait_s)
        reply = self._call(
            "poll", lambda: self._stub.GetTask(request, timeout=wait_s + self._timeout)
        )
        return convert.task_from_proto(reply)

    def download_model(
        self, client_id: str, round_number: int, *, have_sha256: str = ""
    ) -> GlobalModelBlob:
        request = pb.ModelRequest(
            client_id=client_id, round_number=round_number, have_sha256=have_sha256
        )
        return self._call("download", lambda: self._download(request))

    def _download(self, request: pb.ModelRequest) -> GlobalModelBlob:
        stream: Iterator[_ModelChunk] = self._model_stream(request, timeout=self._timeout)
        first = next(stream, None)
        if not isinstance(first, pb.ModelChunk) or not first.HasField("header"):
            raise ChecksumError("model stream did not start with a header")
        header = first.header
        checksum = PayloadChecksum.of_header(xxh3_128=header.xxh3_128, sha256=header.sha256)
        assembler = Assembler(header.total_bytes, checksum, max_bytes=self._max_payload)
        for chunk in stream:
            assembler.add(chunk if isinstance(chunk, memoryview) else chunk.data)
        return GlobalModelBlob(
            header.round_number,
            assembler.finish(),
            header.sha256,
            base_sha256=header.base_sha256,
            model_sha256=header.model_sha256,
        )

    def submit_update(self, submission: UpdateSubmission) -> UpdateAck:
        checksum = PayloadChecksum.xxh3_128(submission.payload)
        header = convert.submission_to_header(submission, xxh3_128=checksum.hexdigest)

        def chunks() -> Iterator[bytes]:  # serialized UpdateChunk messages
            yield pb.UpdateChunk(header=header).SerializeToString()
            for data in split(submission.payload, self._chunk_bytes):
                yield data_chunk_message(data)

        reply = self._call("submit", lambda: self._submit_stream(chunks(), timeout=self._timeout))
        return convert.ack_from_proto(reply)

    def rollback(self, to_round: int, *, admin_token: str, reason: str = "") -> RollbackOutcome:
        request = pb.RollbackRequest(to_round=to_round, reason=reason)
        metadata = (("authorization", f"Bearer {admin_token}"),)
        try:  # not retried: a second rollback would also fail the round opened by the first
            reply = self._stub.Rollback(request, timeout=self._timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return convert.rollback_from_proto(reply)

    def status(self) -> TrainingStatus:
        reply = self._call(
            "status",
            lambda: self._stub.GetTrainingStatus(pb.StatusRequest(), timeout=self._timeout),
        )
        return convert.status_from_proto(reply)


_ModelChunk = pb.ModelChunk | memoryview
"""A received model chunk: the data of a plain data chunk, else the parsed message."""


_model_chunk_from_bytes = chunk_reader(pb.ModelChunk.FromString)


def request_rollback(
    target: str, to_round: int, *, admin_token: str, reason: str = "", timeout_s: float = 30.0
) -> RollbackOutcome:
    """Ask a running coordinator to restore completed round ``to_round`` (operator call)."""
    retry = RetryPolicy(initial_s=0.1, max_delay_s=1.0, total_s=timeout_s)
    with GrpcCoordinatorClient(target, retry=retry, call_timeout_s=timeout_s) as api:
        return api.rollback(to_round, admin_token=admin_token, reason=reason)


def fetch_status(target: str, *, timeout_s: float = 5.0) -> TrainingStatus:
    """One status call with a short retry budget (``fedlearn status``, ``fedlearn run``)."""
    retry = RetryPolicy(initial_s=0.1, max_delay_s=1.0, total_s=timeout_s)
    with GrpcCoordinatorClient(target, retry=retry, call_timeout_s=timeout_s) as api:
        return api.status()
