"""How ``GrpcCoordinatorClient`` reads and checks a model download (the gRPC call is
faked; each message goes through the client's own deserializer)."""

from __future__ import annotations

import hashlib

import pytest
import xxhash

from fedlearn.errors import ChecksumError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.transport import chunks as chunks_module
from fedlearn.transport.chunks import EncodedModelCache
from fedlearn.transport.client import GrpcCoordinatorClient, _model_chunk_from_bytes
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb

PAYLOAD = bytes(range(256)) * 300


class _ModelStream:
    """Stands in for the client's GetGlobalModel call: serves ``messages`` as gRPC
    would hand them over, serialized, through the client's response deserializer."""

    def __init__(self, messages: list[pb.ModelChunk]) -> None:
        self.messages = messages

    def __call__(self, request, timeout=None):
        return (_model_chunk_from_bytes(m.SerializeToString()) for m in self.messages)


def _served(payload: bytes = PAYLOAD) -> list[pb.ModelChunk]:
    blob = GlobalModelBlob(4, payload, hashlib.sha256(payload).hexdigest())
    return [pb.ModelChunk.FromString(m) for m in EncodedModelCache(4096).chunks(blob)]


def _flip_a_byte(messages: list[pb.ModelChunk]) -> None:
    data = bytearray(messages[2].data)
    data[7] ^= 1
    messages[2].data = bytes(data)


def _download(messages: list[pb.ModelChunk]) -> GlobalModelBlob:
    with GrpcCoordinatorClient("127.0.0.1:1", seed=0) as api:
        api._model_stream = _ModelStream(messages)
        return api.download_model("c1", 4)


def test_the_server_announces_the_models_xxh3_beside_its_sha256():
    header = _served()[0].header
    assert header.xxh3_128 == xxhash.xxh3_128_hexdigest(PAYLOAD)
    assert header.sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_a_download_announcing_xxh3_is_checked_with_it_and_not_hashed_with_sha256(monkeypatch):
    def no_sha256(*args):
        raise AssertionError("the payload was hashed with SHA-256")

    messages = _served()
    monkeypatch.setattr(chunks_module.hashlib, "sha256", no_sha256)
    blob = _download(messages)
    monkeypatch.undo()
    assert blob.payload == PAYLOAD
    assert blob.sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_a_damaged_download_fails_its_xxh3_check():
    messages = _served()
    _flip_a_byte(messages)
    with pytest.raises(ChecksumError):
        _download(messages)


def test_a_server_without_xxh3_is_checked_against_the_models_sha256():
    messages = _served()
    messages[0].header.xxh3_128 = ""
    assert _download(messages).payload == PAYLOAD
    _flip_a_byte(messages)
    with pytest.raises(ChecksumError):
        _download(messages)


def test_data_chunks_are_read_without_a_copy_and_headers_through_protobuf():
    header, *data = EncodedModelCache(4096).chunks(GlobalModelBlob(4, PAYLOAD, "0" * 64))
    parsed = _model_chunk_from_bytes(header)
    assert isinstance(parsed, pb.ModelChunk) and parsed.header.total_bytes == len(PAYLOAD)
    views = [_model_chunk_from_bytes(m) for m in data]
    assert all(isinstance(v, memoryview) for v in views)
    assert views[0].obj is data[0]  # a view of the received message, not a copy
    assert b"".join(views) == PAYLOAD


def test_a_data_chunk_with_other_fields_goes_through_protobuf():
    message = (
        pb.ModelChunk(data=b"abc").SerializeToString()
        + pb.ModelChunk(data=b"def").SerializeToString()
    )  # the field twice: protobuf keeps the last value
    parsed = _model_chunk_from_bytes(message)
    assert isinstance(parsed, pb.ModelChunk) and parsed.data == b"def"
