"""The coordinator's gRPC server: a thin servicer over the service layer."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedlearn.errors import ConfigError, FedLearnError, UpdateRejectedError
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import Registration
from fedlearn.transport import convert
from fedlearn.transport.chunks import (
    DEFAULT_CHUNK_BYTES,
    Assembler,
    EncodedModelCache,
    data_chunk_wire_bytes,
)
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2_grpc as pb_grpc
from fedlearn.transport.status_codes import REASON_KEY, code_for, reason_for

__all__ = ["CoordinatorServer", "ServerOptions"]

logger = logging.getLogger(__name__)
SERVICE_NAME = "fedlearn.v1.FederatedLearning"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Network limits of the coordinator's gRPC server."""

    address: str = "127.0.0.1:50051"
    max_workers: int = 64
    max_message_bytes: int = 4 << 20
    max_payload_bytes: int = 256 << 20
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_wait_s: float = 5.0
    tick_s: float = 0.2
    max_concurrent_uploads: int = 8
    """Uploads held in memory at once; more are refused with RESOURCE_EXHAUSTED."""
    upload_slot_wait_s: float = 2.0
    """How long an upload may wait for a free slot before it is refused."""
    max_concurrent_downloads: int = 16
    """Model downloads streamed at once (each buffers up to a model's size in gRPC)."""
    download_slot_wait_s: float = 5.0
    admin_token: str | None = None
    """Bearer token that operator calls (``Rollback``) must carry; ``None``: refused."""


class _Translated:
    """Turns a fedlearn error raised inside the block into a gRPC status."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, FedLearnError):
            self._context.set_trailing_metadata(((REASON_KEY, reason_for(exc)),))
            self._context.abort(code_for(exc), str(exc))


class _Servicer(pb_grpc.FederatedLearningServicer):
    def __init__(self, coordinator: Coordinator, options: ServerOptions) -> None:
        self._coordinator = coordinator
        self._options = options
        self._upload_slots = threading.BoundedSemaphore(options.max_concurrent_uploads)
        self._download_slots = threading.BoundedSemaphore(options.max_concurrent_downloads)
        self._encoded = EncodedModelCache(options.chunk_bytes)

    def RegisterClient(
        self, request: pb.ClientRegistration, context: grpc.ServicerContext
    ) -> pb.RegistrationResponse:
        with _Translated(context):
            caps = convert.capabilities_from_proto(request.capabilities)
            record = self._coordinator.register_client(request.client_id or None, caps)
            cfg = self._coordinator.config
            return convert.registration_to_proto(
                Registration(record.client_id, cfg.run_id, cfg.model_name)
            )

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.TaskResponse:
        wait = max(0.0, min(request.wait_seconds, self._options.max_wait_s))
        with _Translated(context):
            return convert.task_to_proto(
                self._coordinator.poll_task(request.client_id, wait_s=wait)
            )

    def GetGlobalModel(
        self, request: pb.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        with _Translated(context):
            blob = self._coordinator.get_global_model(request.client_id, request.round_number)
        if not self._download_slots.acquire(timeout=self._options.download_slot_wait_s):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._options.max_concurrent_downloads} downloads in progress; retry shortly",
            )
        started = time.perf_counter()
        try:
            yield from self._encoded.chunks(blob)
        finally:
            self._download_slots.release()
        # the round being trained on this model: the one asked for, or the next one
        training_round = request.round_number or blob.round_number + 1
        self._coordinator.record_download(training_round, time.perf_counter() - started)

    def SubmitUpdate(
        self, request_iterator: Iterator[pb.UpdateChunk], context: grpc.ServicerContext
    ) -> pb.UpdateAck:
        # Back-pressure: each upload holds its payload in memory until it is folded in.
        if not self._upload_slots.acquire(timeout=self._options.upload_slot_wait_s):
            context.set_trailing_metadata(((REASON_KEY, "busy"), ("retry-after-ms", "500")))
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._options.max_concurrent_uploads} uploads in progress; retry shortly",
            )
        try:
            return self._submit(request_iterator, context)
        finally:
            self._upload_slots.release()

    def _submit(
        self, request_iterator: Iterator[pb.UpdateChunk], context: grpc.ServicerContext
    ) -> pb.UpdateAck:
        with _Translated(context):
            first = next(request_iterator, None)
            started = time.perf_counter()
            if first is None or not first.HasField("header"):
                raise UpdateRejectedError("no_header", "update stream must start with a header")
            header = first.header
            assembler = Assembler(
                header.total_bytes, header.sha256, max_bytes=self._options.max_payload_bytes
            )
            wire = first.ByteSize()
            for chunk in request_iterator:
                data = chunk.data
                assembler.add(data)
                wire += data_chunk_wire_bytes(len(data))  # ByteSize() would re-encode
            submission = convert.submission_from_header(
                header,
                assembler.finish(),
                wire_bytes=wire,
                upload_seconds=time.perf_counter() - started,
            )
            return convert.ack_to_proto(self._coordinator.submit_update(submission))

    def GetTrainingStatus(
        self, request: pb.StatusRequest, context: grpc.ServicerContext
    ) -> pb.TrainingStatus:
        with _Translated(context):
            return convert.status_to_proto(self._coordinator.status())

    def Rollback(
        self, request: pb.RollbackRequest, context: grpc.ServicerContext
    ) -> pb.RollbackResponse:
        _require_admin(context, self._options.admin_token)
        with _Translated(context):
            outcome = self._coordinator.rollback(request.to_round, reason=request.reason)
            return convert.rollback_to_proto(outcome)


def _require_admin(context: grpc.ServicerContext, token: str | None) -> None:
    """Abort unless the call carries the coordinator's admin token."""
    if token is None:
        context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            "operator calls are disabled: start the coordinator with --admin-token "
            "(or FEDLEARN_ADMIN_TOKEN)",
        )
    sent = dict(context.invocation_metadata()).get("authorization", "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, f"Bearer {token}"):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong admin token")


def _add_servicer(servicer: _Servicer, server: grpc.Server) -> None:
    """Register the servicer as the generated code does, except for one serializer.

    Model chunks come out of ``EncodedModelCache`` already serialized (once per
    model version, not once per client), so ``GetGlobalModel`` passes ``bytes``
    through as they are.
    """
    handlers = {
        "RegisterClient": grpc.unary_unary_rpc_method_handler(
            servicer.RegisterClient,
            request_deserializer=pb.ClientRegistration.FromString,
            response_serializer=pb.RegistrationResponse.SerializeToString,
        ),
        "GetTask": grpc.unary_unary_rpc_method_handler(
            servicer.GetTask,
            request_deserializer=pb.TaskRequest.FromString,
            response_serializer=pb.TaskResponse.SerializeToString,
        ),
        "GetGlobalModel": grpc.unary_stream_rpc_method_handler(
            servicer.GetGlobalModel,
            request_deserializer=pb.ModelRequest.FromString,
            response_serializer=_pass_bytes,
        ),
        "SubmitUpdate": grpc.stream_unary_rpc_method_handler(
            servicer.SubmitUpdate,
            request_deserializer=pb.UpdateChunk.FromString,
            response_serializer=pb.UpdateAck.SerializeToString,
        ),
        "GetTrainingStatus": grpc.unary_unary_rpc_method_handler(
            servicer.GetTrainingStatus,
            request_deserializer=pb.StatusRequest.FromString,
            response_serializer=pb.TrainingStatus.SerializeToString,
        ),
        "Rollback": grpc.unary_unary_rpc_method_handler(
            servicer.Rollback,
            request_deserializer=pb.RollbackRequest.FromString,
            response_serializer=pb.RollbackResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def _pass_bytes(message: bytes) -> bytes:
    return message


class CoordinatorServer:
    """Serves one coordinator over gRPC and drives its round deadlines."""

    def __init__(self, coordinator: Coordinator, options: ServerOptions) -> None:
        self._coordinator = coordinator
        self._options = options
        limits = [
            ("grpc.max_receive_message_length", options.max_message_bytes),
            ("grpc.max_send_message_length", options.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Without bandwidth-delay probing each stream keeps gRPC's fixed 64 KiB
            # flow-control window. With it, windows grow to megabytes per stream, and
            # hundreds of clients pushing updates at once made the coordinator buffer
            # most of their payloads (peak RSS +490 MB at 100 clients, +1.5 GB at 250).
            ("grpc.http2.bdp_probe", 0),
        ]
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.max_workers), options=limits
        )
        _add_servicer(_Servicer(coordinator, options), self._server)
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        try:
            self.port = self._server.add_insecure_port(options.address)
        except RuntimeError as exc:  # recent grpcio raises instead of returning 0
            raise ConfigError(f"could not bind the coordinator to {options.address}") from exc
        if self.port == 0:
            raise ConfigError(f"could not bind the coordinator to {options.address}")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="round-ticker", daemon=True)

    def start(self) -> None:
        self._server.start()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ticker.start()
        logger.info("coordinator listening on port %d", self.port)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._options.tick_s):
            try:
                self._coordinator.tick()
            except Exception:  # the ticker must outlive any single failure
                logger.exception("round deadline check failed")

    def wait_until_finished(self, poll_s: float = 0.2) -> None:
        while not self._stop.is_set() and not self._coordinator.finished:
            self._stop.wait(poll_s)

    def stop(self, grace_s: float = 2.0) -> None:
        self._stop.set()
        self._health.enter_graceful_shutdown()
        self._server.stop(grace_s).wait()
