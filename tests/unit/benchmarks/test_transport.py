"""The transport benchmark's durable-write reference."""

from benchmarks import transport


def test_blob_write_reference_writes_durable_blobs_and_leaves_none(tmp_path, monkeypatch):
    puts = []
    real_put = transport.FileModelStore.put

    def counting_put(self, key, data):
        puts.append(len(data))
        return real_put(self, key, data)

    monkeypatch.setattr(transport.FileModelStore, "put", counting_put)
    payload = bytes(range(256)) * 4096  # 1 MiB

    rate = transport._blob_write_rate(payload, count=6, streams=2, repeat=2, tmp=tmp_path)

    assert rate > 0
    assert puts == [len(payload)] * 18  # a warm-up batch, then two timed ones
    folder = tmp_path / "sql" / "blob-write-reference"
    assert [p for p in folder.rglob("*") if p.is_file()] == []
