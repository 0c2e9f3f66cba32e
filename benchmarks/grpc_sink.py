"""A bare gRPC server that only counts the bytes of client streams: gRPC Python's floor.

``python -m benchmarks.grpc_sink --port-file F``

The transport benchmark streams the same chunk messages to it as to the
coordinator, with the same server options (asyncio server, message limits, no
BDP probing), so the gap between the two rows is what fedlearn itself costs
per upload: checksum, reassembly, decoding, validation, storage and the fold.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

__all__ = ["METHOD", "main"]

METHOD = "/fedlearn.bench.Sink/Upload"


async def _count(messages: AsyncIterator[bytes], context: Any) -> bytes:
    total = 0
    async for message in messages:
        total += len(message)
    return total.to_bytes(8, "little")


async def _serve(port_file: Path) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 4 << 20),
            ("grpc.max_send_message_length", 4 << 20),
            ("grpc.so_reuseport", 0),
            ("grpc.http2.bdp_probe", 0),  # as the coordinator's server
        ]
    )
    handler = grpc.stream_unary_rpc_method_handler(
        _count, request_deserializer=bytes, response_serializer=bytes
    )
    service, method = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    asyncio.run(_serve(parser.parse_args().port_file))


if __name__ == "__main__":
    main()
