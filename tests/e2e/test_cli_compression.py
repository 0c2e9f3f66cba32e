"""``fedlearn run --update-codec``: compressed updates through the real gRPC path reach
the accuracy of uncompressed ones, and summary.json shows the bytes they saved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Transcript, fedlearn

from fedlearn.persistence import SqlRunStore, make_engine

CODEC = "topk:0.01+int8"
MARGIN = 0.02
"""How far below the uncompressed run's final accuracy the compressed run may end."""
SETTING = (
    "--clients", 4, "--rounds", 25, "--model", "mlp", "--partitioner", "iid",
    "--strategy", "fedavg", "--local-epochs", 1, "--seed", 0, "--log-level", "warning",
)  # fmt: skip


def _run(
    out: Path, codec: str, *, digits: Path, env: dict[str, str], transcript: Transcript
) -> dict[str, Any]:
    transcript.log_dirs.append(out / "logs")
    done = fedlearn(
        "run", *SETTING, "--update-codec", codec, "--data-dir", digits, "--out", out,
        env=env, timeout_s=300, transcript=transcript,
    )  # fmt: skip
    assert done.returncode == 0
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_compressed_run_reaches_the_raw_accuracy_and_reports_the_bytes_it_saved(
    tmp_path: Path, digits_dir: Path, cli_env: dict[str, str], transcript: Transcript
) -> None:
    raw = _run(tmp_path / "raw", "raw", digits=digits_dir, env=cli_env, transcript=transcript)
    packed = _run(tmp_path / "topk", CODEC, digits=digits_dir, env=cli_env, transcript=transcript)

    assert [r["codec"] for r in raw["rounds"]] == ["raw"] * 25
    assert [r["codec"] for r in packed["rounds"]] == [CODEC] * 25
    assert [r["clients"] for r in packed["rounds"]] == [4] * 25
    assert packed["config"]["update_codec"] == CODEC

    # bytes: top-1% int8 updates are over 100x smaller than float32 ones
    assert packed["upload_compression"] > 100
    assert packed["upload_bytes_saved"] > 0
    assert packed["upload_bytes_saved"] == packed["raw_bytes_up_total"] - packed["bytes_up_total"]
    assert packed["bytes_up_total"] == sum(r["bytes_up"] for r in packed["rounds"])
    assert all(r["upload_compression"] > 100 for r in packed["rounds"])
    # the same model, so the same float32 baseline; raw sends it as it is (plus headers)
    assert packed["raw_bytes_up_total"] == raw["raw_bytes_up_total"]
    assert raw["upload_compression"] == pytest.approx(1.0, abs=0.01)

    # accuracy: error feedback lets the compressed run keep up
    assert raw["final_accuracy"] > 0.85  # the comparison means something
    assert packed["final_accuracy"] >= raw["final_accuracy"] - MARGIN, (
        raw["final_accuracy"],
        packed["final_accuracy"],
    )

    # the coordinator stored each update with its codec and ratio
    engine = make_engine(f"sqlite:///{tmp_path / 'topk' / 'state' / 'fedlearn.db'}")
    try:
        updates = SqlRunStore(engine).list_updates(packed["run_id"], 25)
    finally:
        engine.dispose()
    assert [u.codec for u in updates] == [CODEC] * 4
    assert all(u.compression_ratio > 100 for u in updates)
