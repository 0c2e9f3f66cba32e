"""Cutting payloads into chunks and reassembling them with size and checksum checks."""

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
    PayloadChecksum,
    data_chunk_message,
    data_chunk_wire_bytes,
    data_of_chunk_message,
    split,
)
from fedlearn.transport.pb.fedlearn.v1 import fedlearn_pb2 as pb


def _sha(data: bytes) -> PayloadChecksum:
    return PayloadChecksum("sha256", hashlib.sha256(data).hexdigest())


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


@given(st.binary(max_size=3_000), st.integers(min_value=1, max_value=400))
def test_assembler_checks_xxh3_announced_by_an_update_header(payload, chunk_bytes):
    checksum = PayloadChecksum.xxh3_128(payload)
    assembler = Assembler(len(payload), checksum, max_bytes=3_000)
    for chunk in split(payload, chunk_bytes):
        assembler.add(chunk)
    assert assembler.finish() == payload


def test_assembler_refuses_a_payload_whose_xxh3_differs():
    payload = bytes(range(256)) * 8
    assembler = Assembler(len(payload), PayloadChecksum.xxh3_128(payload), max_bytes=10_000)
    assembler.add(payload[:-1] + b"\x00")
    with pytest.raises(ChecksumError, match="xxh3-128"):
        assembler.finish()


def test_assembler_returns_bytes_when_chunks_are_views():
    payload = b"abc" * 100
    assembler = Assembler(len(payload), PayloadChecksum.xxh3_128(payload), max_bytes=1_000)
    assembler.add(memoryview(payload))
    result = assembler.finish()
    assert type(result) is bytes and result == payload


def test_announced_checksum_prefers_xxh3_and_falls_back_to_sha256():
    assert PayloadChecksum.announced(xxh3_128="ab", sha256="cd") == PayloadChecksum(
        "xxh3-128", "ab"
    )
    assert PayloadChecksum.announced(xxh3_128="", sha256="cd") == PayloadChecksum("sha256", "cd")


def test_an_update_header_without_checksum_is_refused():
    with pytest.raises(UpdateRejectedError) as info:
        PayloadChecksum.announced(xxh3_128="", sha256="")
    assert info.value.reason == "no_checksum"


@given(st.binary(max_size=70_000))
def test_hand_serialized_data_chunks_parse_as_protobuf_messages(data):
    message = data_chunk_message(memoryview(data))
    assert pb.UpdateChunk.FromString(message).data == data
    assert pb.ModelChunk.FromString(message).data == data
    assert message == pb.UpdateChunk(data=data).SerializeToString() or not data
    assert len(message) == data_chunk_wire_bytes(len(data))


@given(st.binary(min_size=1, max_size=5_000))
def test_fast_parser_reads_data_chunks_as_protobuf_does(data):
    message = pb.UpdateChunk(data=data).SerializeToString()
    view = data_of_chunk_message(message)
    assert view is not None and bytes(view) == pb.UpdateChunk.FromString(message).data


@pytest.mark.parametrize(
    "message",
    [
        pb.UpdateChunk(header=pb.UpdateHeader(client_id="c", total_bytes=3)).SerializeToString(),
        pb.UpdateChunk(data=b"abc").SerializeToString() + b"\x12\x01z",  # a second data field
        pb.UpdateChunk(data=b"abc").SerializeToString()[:-1],  # truncated
        b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # runaway varint
        b"",
        b"\x12",
    ],
)
def test_fast_parser_leaves_anything_but_one_whole_data_field_to_protobuf(message):
    assert data_of_chunk_message(message) is None


def test_split_yields_views_without_copying():
    payload = bytes(range(10))
    chunks = list(split(payload, 4))
    assert all(isinstance(c, memoryview) and c.obj is payload for c in chunks)
