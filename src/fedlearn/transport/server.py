"""The coordinator's gRPC server: a thin servicer over the service layer."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from fedlearn.errors import ConfigError, FedLearnError, UpdateRejectedError
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import Registration, TaskKind, UpdateAck
from fedlearn.transport import convert
from fedlearn.transport.chunks import (
    DEFAULT_CHUNK_BYTES,
    Assembler,
    EncodedModelCache,
    PayloadChecksum,
    chunk_reader,
    data_chunk_wire_bytes,
    serialized,
)
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2_grpc as pb_grpc
from fedlearn.transport.status_codes import REASON_KEY, busy_metadata, code_for, reason_for

__all__ = ["CoordinatorServer", "ServerOptions"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
SERVICE_NAME = "fedlearn.v1.FederatedLearning"


_LOOKAHEAD_BYTES = 16 << 10
"""Bytes of a stream gRPC reads ahead of its handler (the per-stream receive window)."""


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
    max_concurrent_uploads: int = 4
    """Uploads held in memory at once; more are refused with RESOURCE_EXHAUSTED."""
    upload_slot_wait_s: float = 2.0
    """How long an upload may wait for a free slot before it is refused."""
    max_concurrent_downloads: int = 16
    """Model downloads streamed at once (each buffers up to a model's size in gRPC)."""
    download_slot_wait_s: float = 5.0
    admin_token: str | None = None
    """Bearer token that operator calls (``Rollback``) must carry; ``None``: refused."""


class _Changes:
    """Wakes every long-polling ``GetTask`` call when the coordinator's state changes.

    Lives on the event loop: ``fire`` is scheduled there by the watcher thread.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


@contextlib.asynccontextmanager
async def _translated(context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
    """Turns a fedlearn error raised inside the block into a gRPC status."""
    try:
        yield
    except FedLearnError as exc:
        context.set_trailing_metadata(((REASON_KEY, reason_for(exc)),))
        await context.abort(code_for(exc), str(exc))


class _Servicer(pb_grpc.FederatedLearningServicer):
    """Asynchronous handlers: coordinator calls run on a thread pool, waits do not.

    A long-polling ``GetTask`` holds no thread while it waits (it waits on
    :class:`_Changes`), so a thousand idle clients cost a thousand small
    coroutines, not a thousand threads or queued calls.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        options: ServerOptions,
        *,
        calls: futures.Executor,
        changes: _Changes,
    ) -> None:
        self._coordinator = coordinator
        self._options = options
        self._calls = calls
        self._changes = changes
        self._upload_slots = asyncio.Semaphore(options.max_concurrent_uploads)
        self._download_slots = asyncio.Semaphore(options.max_concurrent_downloads)
        self._encoded = EncodedModelCache(options.chunk_bytes)

    async def _run(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(*args, **kwargs)`` on the coordinator's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._calls, functools.partial(fn, *args, **kwargs))

    async def RegisterClient(
        self, request: pb.ClientRegistration, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RegistrationResponse:
        async with _translated(context):
            caps = convert.capabilities_from_proto(request.capabilities)
            record = await self._run(
                self._coordinator.register_client, request.client_id or None, caps
            )
            cfg = self._coordinator.config
            return convert.registration_to_proto(
                Registration(record.client_id, cfg.run_id, cfg.model_name)
            )
        raise AssertionError("unreachable")  # abort raised

    async def GetTask(
        self, request: pb.TaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TaskResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(request.wait_seconds, self._options.max_wait_s))
        async with _translated(context):
            while True:
                changed = self._changes.current()  # taken before the poll: no change is missed
                task = await self._run(self._coordinator.poll_task, request.client_id)
                remaining = deadline - loop.time()
                if task.kind is not TaskKind.WAIT or remaining <= 0:
                    return convert.task_to_proto(task)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        raise AssertionError("unreachable")

    async def GetGlobalModel(
        self, request: pb.ModelRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        async with _translated(context):
            blob = await self._run(
                self._coordinator.get_global_model,
                request.client_id,
                request.round_number,
                have_sha256=request.have_sha256,
            )
        if not await _acquire(self._download_slots, self._options.download_slot_wait_s):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._options.max_concurrent_downloads} downloads in progress; retry shortly",
            )
        started = time.perf_counter()
        try:
            for message in await self._run(self._encoded.chunks, blob):
                yield message
        finally:
            self._download_slots.release()
        # the round being trained on this model: the one asked for, or the next one
        training_round = request.round_number or blob.round_number + 1
        await self._run(
            self._coordinator.record_download, training_round, time.perf_counter() - started
        )

    async def SubmitUpdate(
        self,
        request_iterator: AsyncIterator[pb.UpdateChunk],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.UpdateAck:
        # Back-pressure: each upload holds its payload in memory until it is folded in.
        if not await _acquire(self._upload_slots, self._options.upload_slot_wait_s):
            context.set_trailing_metadata(busy_metadata())
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._options.max_concurrent_uploads} uploads in progress; retry shortly",
            )
        try:
            async with _translated(context):
                return await self._submit(request_iterator)
        finally:
            self._upload_slots.release()
        raise AssertionError("unreachable")

    async def _submit(self, request_iterator: AsyncIterator[_UpdateChunk]) -> pb.UpdateAck:
        chunks = aiter(request_iterator)
        first = await anext(chunks, None)
        started = time.perf_counter()
        if not isinstance(first, pb.UpdateChunk) or not first.HasField("header"):
            raise UpdateRejectedError("no_header", "update stream must start with a header")
        header = first.header
        checksum = PayloadChecksum.announced(xxh3_128=header.xxh3_128, sha256=header.sha256)
        assembler = Assembler(
            header.total_bytes, checksum, max_bytes=self._options.max_payload_bytes
        )
        wire = first.ByteSize()
        async for chunk in chunks:
            data = chunk if isinstance(chunk, memoryview) else chunk.data
            assembler.add(data)
            wire += data_chunk_wire_bytes(len(data))  # ByteSize() would re-encode
        upload_seconds = time.perf_counter() - started

        def submit() -> UpdateAck:
            submission = convert.submission_from_header(
                header, assembler.finish(), wire_bytes=wire, upload_seconds=upload_seconds
            )
            return self._coordinator.submit_update(submission)

        return convert.ack_to_proto(await self._run(submit))

    async def GetTrainingStatus(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TrainingStatus:
        async with _translated(context):
            return convert.status_to_proto(await self._run(self._coordinator.status))
        raise AssertionError("unreachable")

    async def Rollback(
        self, request: pb.RollbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RollbackResponse:
        await _require_admin(context, self._options.admin_token)
        async with _translated(context):
            outcome = await self._run(
                self._coordinator.rollback, request.to_round, reason=request.reason
            )
            return convert.rollback_to_proto(outcome)
        raise AssertionError("unreachable")


async def _acquire(slots: asyncio.Semaphore, wait_s: float) -> bool:
    try:
        await asyncio.wait_for(slots.acquire(), wait_s)
    except TimeoutError:
        return False
    return True


async def _require_admin(context: grpc.aio.ServicerContext[Any, Any], token: str | None) -> None:
    """Abort unless the call carries the coordinator's admin token."""
    if token is None:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            "operator calls are disabled: start the coordinator with --admin-token "
            "(or FEDLEARN_ADMIN_TOKEN)",
        )
    sent = dict(context.invocation_metadata() or ()).get("authorization", "")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, f"Bearer {token}"):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong admin token")


def _add_servicer(servicer: _Servicer, server: grpc.Server) -> None:
    """Register the servicer as the generated code does, except for two (de)serializers.

    Model chunks come out of ``EncodedModelCache`` already serialized (once per
    model version, not once per client), so ``GetGlobalModel`` passes ``bytes``
    through as they are; ``SubmitUpdate`` reads data chunks without copying them.
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
            response_serializer=serialized,
        ),
        "SubmitUpdate": grpc.stream_unary_rpc_method_handler(
            servicer.SubmitUpdate,
            request_deserializer=_update_chunk_from_bytes,
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


_UpdateChunk = pb.UpdateChunk | memoryview
"""A received update chunk: the data of a plain data chunk, else the parsed message."""


_update_chunk_from_bytes = chunk_reader(pb.UpdateChunk.FromString)


class CoordinatorServer:
    """Serves one coordinator over gRPC (asyncio) and drives its round deadlines.

    The gRPC server runs on an event loop in its own thread; coordinator calls
    run on a pool of ``options.max_workers`` threads; a watcher thread turns the
    coordinator's change count into wake-ups of waiting long polls; a ticker
    thread closes rounds at their deadlines. The methods of this class are
    synchronous and may be called from any thread.
    """

    def __init__(self, coordinator: Coordinator, options: ServerOptions) -> None:
        self._coordinator = coordinator
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="grpc-server", daemon=True
        )
        self._calls = futures.ThreadPoolExecutor(
            max_workers=options.max_workers, thread_name_prefix="coordinator-call"
        )
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="round-ticker", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="change-watcher", daemon=True)
        self._loop_thread.start()
        try:
            self._server, self._health, self._changes, self.port = self._on_loop(self._build())
        except BaseException:
            self._close_loop()
            raise

    def _on_loop(self, coroutine: Coroutine[Any, Any, _T], timeout_s: float = 30.0) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    async def _build(self) -> tuple[grpc.aio.Server, HealthServicer, _Changes, int]:
        limits = [
            ("grpc.max_receive_message_length", self._options.max_message_bytes),
            ("grpc.max_send_message_length", self._options.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # Without bandwidth-delay probing each stream keeps gRPC's fixed 64 KiB
            # flow-control window. With it, windows grow to megabytes per stream, and
            # hundreds of clients pushing updates at once made the coordinator buffer
            # most of their payloads (peak RSS +490 MB at 100 clients, +1.5 GB at 250).
            ("grpc.http2.bdp_probe", 0),
            # The window gRPC grants each stream ahead of the handler's reads. Uploads
            # beyond the upload slots wait with their streams open and unread, each
            # holding up to this much: hundreds of them wait at 1,000 clients. 16 KiB
            # rather than the 64 KiB default: with one malloc arena (`tune_malloc`), peak
            # RSS at 1,000 clients went from 659-660 to 601-610 MB, and uploads through
            # the coordinator were no slower (0.61-0.75 against 0.55-0.68 GB/s in memory).
            ("grpc.http2.lookahead_bytes", _LOOKAHEAD_BYTES),
        ]
        server = grpc.aio.server(options=limits)
        changes = _Changes()
        _add_servicer(
            _Servicer(self._coordinator, self._options, calls=self._calls, changes=changes),
            server,
        )
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = self._options.address
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:  # recent grpcio raises instead of returning 0
            raise ConfigError(f"could not bind the coordinator to {address}") from exc
        if port == 0:
            raise ConfigError(f"could not bind the coordinator to {address}")
        return server, health_servicer, changes, port

    async def _start(self) -> None:
        await self._server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def start(self) -> None:
        self._on_loop(self._start())
        self._ticker.start()
        self._watcher.start()
        logger.info("coordinator listening on port %d", self.port)

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._options.tick_s):
            try:
                self._coordinator.tick()
            except Exception:  # the ticker must outlive any single failure
                logger.exception("round deadline check failed")

    def _watch(self) -> None:
        """Wake the waiting polls when a broadcast changed what they may be told."""
        seen = self._coordinator.wait_for_change(-1, timeout_s=0)
        epoch = self._coordinator.task_epoch()
        while not self._stop.is_set():
            now = self._coordinator.wait_for_change(seen, timeout_s=0.5)
            if now == seen:
                continue
            seen = now
            current = self._coordinator.task_epoch()
            if current != epoch:
                epoch = current
                self._loop.call_soon_threadsafe(self._changes.fire)

    def wait_until_finished(self, poll_s: float = 0.2) -> None:
        while not self._stop.is_set() and not self._coordinator.finished:
            self._stop.wait(poll_s)

    async def _shutdown(self, grace_s: float) -> None:
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)

    def stop(self, grace_s: float = 2.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._on_loop(self._shutdown(grace_s), timeout_s=grace_s + 10.0)
        finally:
            self._close_loop()
            for thread in (self._ticker, self._watcher):
                if thread.is_alive():
                    thread.join(timeout=5.0)

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10.0)
        if not self._loop_thread.is_alive():
            self._loop.close()
        self._calls.shutdown(wait=False, cancel_futures=True)
