"""How ``GrpcCoordinatorClient`` checks a model download (the stub is faked)."""

from __future__ import annotations

import hashlib

import pytest
import xxhash

from fedlearn.errors import ChecksumError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.transport import chunks as chunks_module
from fedlearn.transport.chunks import EncodedModelCache
from fedlearn.transport.client import GrpcCoordinatorClient
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb

PAYLOAD = bytes(range(256)) * 300


class _Stub:
    def __init__(self, messages: list[pb.ModelChunk]) -> None:
        self.messages = messages

    def GetGlobalModel(self, request, timeout=None):
        return iter(self.messages)


def _served(payload: bytes = PAYLOAD) -> list[pb.ModelChunk]:
    blob = GlobalModelBlob(4, payload, hashlib.sha256(payload).hexdigest())
    return [pb.ModelChunk.FromString(m) for m in EncodedModelCache(4096).chunks(blob)]


def _flip_a_byte(messages: list[pb.ModelChunk]) -> None:
    data = bytearray(messages[2].data)
    data[7] ^= 1
    messages[2].data = bytes(data)


def _download(messages: list[pb.ModelChunk]) -> GlobalModelBlob:
    with GrpcCoordinatorClient("127.0.0.1:1", seed=0) as api:
        api._stub = _Stub(messages)
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
