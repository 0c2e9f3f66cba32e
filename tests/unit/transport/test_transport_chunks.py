"""Cutting payloads into chunks and reassembling them with size and SHA-256 checks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlearn.errors import ChecksumError, UpdateRejectedError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.transport.chunks import (
    Assembler,
    EncodedModelCache,
    data_chunk_wire_bytes,
    split,
)
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@given(st.binary(max_size=2_000), st.integers(min_value=1, max_value=300))
def test_split_cuts_into_chunks_of_at_most_chunk_bytes_in_order(payload, chunk_bytes):
    chunks = list(split(payload, chunk_bytes))
    assert b"".join(chunks) == payload
    assert all(0 < len(c) <= chunk_bytes for c in chunks)
    assert all(len(c) == chunk_bytes for c in chunks[:-1])
    assert len(chunks) == -(-len(payload) // chunk_bytes)


@given(st.binary(max_size=2_000), st.integers(min_value=1, max_value=300))
def test_assembler_reassembles_split_payload(payload, chunk_bytes):
    assembler = Assembler(len(payload), _sha(payload), max_bytes=2_000)
    for chunk in split(payload, chunk_bytes):
        assembler.add(chunk)
    assert assembler.finish() == payload


def test_assembler_accepts_empty_payload():
    assert Assembler(0, _sha(b""), max_bytes=10).finish() == b""


def test_assembler_accepts_payload_of_exactly_max_bytes():
    payload = bytes(range(100))
    assembler = Assembler(100, _sha(payload), max_bytes=100)
    assembler.add(payload)
    assert assembler.finish() == payload


def test_assembler_raises_checksum_error_when_digest_differs():
    payload = b"x" * 1000
    assembler = Assembler(len(payload), _sha(payload), max_bytes=10_000)
    for chunk in split(b"y" + payload[1:], 128):
        assembler.add(chunk)
    with pytest.raises(ChecksumError):
        assembler.finish()


def test_assembler_rejects_more_bytes_than_announced():
    payload = b"abcdef"
    assembler = Assembler(4, _sha(payload[:4]), max_bytes=100)
    assembler.add(payload[:3])
    with pytest.raises(UpdateRejectedError) as info:
        assembler.add(payload[3:])
    assert info.value.reason == "size_mismatch"


def test_assembler_rejects_fewer_bytes_than_announced():
    payload = b"abcdef"
    assembler = Assembler(len(payload), _sha(payload), max_bytes=100)
    assembler.add(payload[:5])
    with pytest.raises(UpdateRejectedError) as info:
        assembler.finish()
    assert info.value.reason == "size_mismatch"


def test_assembler_refuses_announced_size_over_max_before_allocating():
    with pytest.raises(UpdateRejectedError) as info:
        Assembler(1 << 50, _sha(b""), max_bytes=1 << 20)  # 1 PiB would not fit in memory
    assert info.value.reason == "too_large"


def test_assembler_refuses_one_byte_over_max():
    with pytest.raises(UpdateRejectedError) as info:
        Assembler(101, _sha(b""), max_bytes=100)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_383, 16_384, 1 << 20, (1 << 21) + 5])
def test_data_chunk_wire_bytes_equals_the_serialized_size(size):
    assert data_chunk_wire_bytes(size) == pb.UpdateChunk(data=b"x" * size).ByteSize()


def _blob(round_number: int, payload: bytes) -> GlobalModelBlob:
    return GlobalModelBlob(round_number, payload, hashlib.sha256(payload).hexdigest())


def test_encoded_model_chunks_parse_back_to_the_model():
    blob = _blob(3, bytes(range(256)) * 41)
    messages = [pb.ModelChunk.FromString(m) for m in EncodedModelCache(1000).chunks(blob)]
    header = messages[0].header
    assert (header.round_number, header.total_bytes, header.sha256) == (3, 256 * 41, blob.sha256)
    assert [len(m.data) for m in messages[1:]] == [1000] * 10 + [496]
    assert b"".join(m.data for m in messages[1:]) == blob.payload


def test_encoded_model_cache_encodes_each_version_once():
    cache = EncodedModelCache(64)
    first = cache.chunks(_blob(1, b"a" * 100))
    assert cache.chunks(_blob(1, b"a" * 100)) is first
    second = cache.chunks(_blob(2, b"b" * 100))
    assert second is not first
    assert pb.ModelChunk.FromString(second[0]).header.round_number == 2
