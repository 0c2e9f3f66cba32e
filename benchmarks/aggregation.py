"""Streaming FedAvg throughput against the machine's memory bandwidth.

Folds synthetic CNN-sized float32 updates (1,663,370 parameters, 6.65 MB) with
``StreamingFedAvg.add``, the coordinator's kernel, and reports GB/s of update data
folded in. The memory bandwidth is measured in the same run as the best of several
numpy streaming reads of a 1 GiB float32 array (``sum`` and ``maximum.reduce``;
numpy reductions do not go through BLAS, so ``OPENBLAS_CORETYPE`` does not matter).
Also timed: the coordinator's whole per-update path (decode, validate, fold) and, as a
reference that is not fedlearn code, the same arithmetic written as a cast-copy
followed by in-place float64 operations.
"""

from __future__ import annotations

import os

import numpy as np

from benchmarks.common import CNN_PARAMETERS, best_time, cnn_weights
from benchmarks.report import Plot, Result, Series, Target
from fedlearn.core.aggregation import StreamingFedAvg
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.validation import validate_update

__all__ = ["run"]

GB = 1e9
DISTINCT_UPDATES = 8  # 53 MB of sources: more than the last-level cache of most machines


def _bandwidth(gib: float, repeat: int) -> dict[str, float]:
    array = np.ones(int(gib * (1 << 30)) // 4, dtype=np.float32)
    reads = {"numpy sum": np.add.reduce, "numpy maximum.reduce": np.maximum.reduce}
    return {
        name: array.nbytes / best_time(lambda f=f: f(array), repeat=repeat) / GB
        for name, f in reads.items()
    }


def _updates(rng: np.random.Generator) -> list[np.ndarray]:
    return [
        rng.standard_normal(CNN_PARAMETERS, dtype=np.float32) * np.float32(1e-3)
        for _ in range(DISTINCT_UPDATES)
    ]


def _fold_rate(updates: list[np.ndarray], n: int, repeat: int) -> float:
    def fold() -> None:
        aggregator = StreamingFedAvg(CNN_PARAMETERS)
        for i in range(n):
            aggregator.add(updates[i % len(updates)], 400.0 + i)
        aggregator.mean()

    return n * CNN_PARAMETERS * 4 / best_time(fold, repeat=repeat) / GB


def _coordinator_path_rate(rng: np.random.Generator, n: int, repeat: int) -> float:
    """decode_weights + validate_update + StreamingFedAvg.add, as ``Coordinator`` does."""
    payloads = [encode_weights(cnn_weights(rng)) for _ in range(4)]
    specs = decode_weights(payloads[0]).specs

    def fold() -> None:
        aggregator = StreamingFedAvg(CNN_PARAMETERS)
        for i in range(n):
            checked = validate_update(decode_weights(payloads[i % len(payloads)]), specs)
            aggregator.add(checked.vector, 400.0)

    return n * CNN_PARAMETERS * 4 / best_time(fold, repeat=repeat) / GB


def _reference_rate(updates: list[np.ndarray], n: int, repeat: int) -> float:
    """Not fedlearn code: the same float64 arithmetic without numpy's buffered casting."""
    total = np.zeros(CNN_PARAMETERS)
    scratch = np.empty(CNN_PARAMETERS)

    def fold() -> None:
        for i in range(n):
            scratch[:] = updates[i % len(updates)]
            np.multiply(scratch, 400.0 + i, out=scratch)
            np.add(total, scratch, out=total)

    return n * CNN_PARAMETERS * 4 / best_time(fold, repeat=repeat) / GB


def run(quick: bool) -> Result:
    repeat = 3 if quick else 7
    counts = (10, 50) if quick else (10, 100, 1000)
    rng = np.random.default_rng(0)
    bandwidth = _bandwidth(1.0, repeat=5 if quick else 9)
    memory = max(bandwidth.values())
    updates = _updates(rng)
    fold = {n: _fold_rate(updates, n, repeat) for n in counts}
    n_main = counts[-1]
    path = _coordinator_path_rate(rng, min(n_main, 50), repeat)
    reference = _reference_rate(updates, n_main, repeat)
    rows: list[list[object]] = [
        [f"memory read: {name} over 1 GiB float32", "-", round(rate, 2), 1.0]
        for name, rate in bandwidth.items()
    ]
    rows += [
        [f"StreamingFedAvg.add, {n} updates", n, round(rate, 2), round(rate / memory, 3)]
        for n, rate in fold.items()
    ]
    rows.append(
        [
            "decode + validate + add (coordinator path)",
            min(n_main, 50),
            round(path, 2),
            round(path / memory, 3),
        ]
    )
    rows.append(
        [
            "reference, not fedlearn: cast-copy, scale, add",
            n_main,
            round(reference, 2),
            round(reference / memory, 3),
        ]
    )
    best_fold = fold[n_main]
    notes = [
        f"Updates: {CNN_PARAMETERS:,} float32 parameters (the CNN, "
        f"{CNN_PARAMETERS * 4 / 1e6:.2f} MB), {DISTINCT_UPDATES} distinct random vectors "
        "cycled; GB/s counts update bytes folded in (4 bytes per parameter), best of "
        f"{repeat} runs.",
        f"Memory bandwidth: best single-thread numpy streaming read ({memory:.1f} GB/s). "
        "StreamingFedAvg.add is single-threaded too: one float32->float64 multiply into a "
        "scratch vector, then one float64 add, i.e. 36 bytes of memory traffic per 4-byte "
        "parameter, and numpy's buffered casting loop in the first step.",
        "The decode + validate row adds what the coordinator does per update besides "
        "the fold: header parsing, a finite check and the update norm (float64 dot, BLAS).",
    ]
    if os.environ.get("OPENBLAS_CORETYPE"):
        notes.append(
            f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} was set (affects "
            "only the BLAS norm in the coordinator-path row)."
        )
    return Result(
        name="aggregation",
        title="Streaming FedAvg throughput",
        columns=["kernel", "updates", "GB/s", "fraction of memory bandwidth"],
        rows=rows,
        targets=[
            Target(
                name="streaming aggregation vs memory bandwidth",
                target=">= 0.5 of the measured bandwidth",
                measured=f"{best_fold:.2f} GB/s = {best_fold / memory:.2f} of {memory:.1f} GB/s",
                met=best_fold >= 0.5 * memory,
            )
        ],
        notes=notes,
        figures=[
            Plot(
                file="aggregation.png",
                title="Streaming FedAvg vs memory bandwidth (GB/s, higher is better)",
                xlabel="",
                ylabel="GB/s",
                kind="bar",
                series=[
                    Series(
                        "GB/s",
                        x=[
                            "memory read",
                            f"FedAvg add x{n_main}",
                            "decode+validate+add",
                            "reference kernel",
                        ],
                        y=[memory, best_fold, path, reference],
                    )
                ],
            )
        ],
        data={
            "bandwidth_gbs": bandwidth,
            "fold_gbs": {str(n): r for n, r in fold.items()},
            "coordinator_path_gbs": path,
            "reference_gbs": reference,
            "parameters": CNN_PARAMETERS,
        },
    )
