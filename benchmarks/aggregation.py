"""Streaming FedAvg throughput against the machine's memory bandwidth.

Folds synthetic CNN-sized float32 updates (1,663,370 parameters, 6.65 MB) with
``StreamingFedAvg.add`` as the coordinator runs it (with the BLAS ``saxpy`` that
``fedlearn.bootstrap.kernels`` hands in, on one BLAS thread as ``limit_blas_threads``
sets it) and with numpy alone, and reports GB/s of update data folded in, each call
timed on its own (median and best). The memory bandwidth is
measured in the same run as the best of many numpy streaming reads of a float32 array
far larger than the caches (512 MiB; ``sum`` and ``maximum.reduce``; numpy reductions
do not go through BLAS, so ``OPENBLAS_CORETYPE`` does not matter).
Also timed: the coordinator's whole per-update path (decode, validate, fold) and, as a
reference that is not fedlearn code, the same arithmetic written as a cast-copy
followed by in-place float64 operations.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import threadpoolctl

from benchmarks.common import CNN_PARAMETERS, cnn_weights
from benchmarks.report import Plot, Result, Series, Target
from fedlearn.bootstrap.kernels import blas_axpy
from fedlearn.core.aggregation import BATCH, Axpy, StreamingFedAvg
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.validation import validate_update

__all__ = ["run"]

GB = 1e9
COLUMNS = ("kernel", "timed", "GB/s, median call", "GB/s, best call", "best / memory bandwidth")
DISTINCT_UPDATES = 8  # 53 MB of sources: more than the last-level cache of most machines


def _rates(seconds: list[float], nbytes: int) -> tuple[float, float]:
    """(median, best) GB/s of operations on ``nbytes`` that took ``seconds`` each."""
    return nbytes / statistics.median(seconds) / GB, nbytes / min(seconds) / GB


def _per_call(fn: Callable[[int], object], calls: int) -> list[float]:
    seconds = []
    for i in range(calls):
        started = time.perf_counter()
        fn(i)
        seconds.append(time.perf_counter() - started)
    return seconds


def _bandwidth(gib: float, passes: int) -> dict[str, tuple[float, float]]:
    array = np.ones(int(gib * (1 << 30)) // 4, dtype=np.float32)
    reads = {"numpy sum": np.add.reduce, "numpy maximum.reduce": np.maximum.reduce}
    return {
        name: _rates(_per_call(lambda _, f=f: f(array), passes), array.nbytes)
        for name, f in reads.items()
    }


def _updates(rng: np.random.Generator) -> list[np.ndarray]:
    return [
        rng.standard_normal(CNN_PARAMETERS, dtype=np.float32) * np.float32(1e-3)
        for _ in range(DISTINCT_UPDATES)
    ]


def _per_batch(add: Callable[[int], object], n: int) -> list[float]:
    """Seconds per update, timed over each batch of ``BATCH`` consecutive ``add`` calls.

    ``StreamingFedAvg`` holds updates back and folds a batch at once, so one call
    says nothing; a batch's calls include exactly one fold.
    """
    return [
        seconds / BATCH
        for seconds in _per_call(
            lambda b: [add(b * BATCH + i) for i in range(BATCH)], max(1, n // BATCH)
        )
    ]


def _fold(updates: list[np.ndarray], n: int, axpy: Axpy | None) -> list[float]:
    aggregator = StreamingFedAvg(CNN_PARAMETERS, axpy=axpy)
    seconds = _per_batch(lambda i: aggregator.add(updates[i % len(updates)], 400.0 + i), n)
    aggregator.mean()
    return seconds


def _coordinator_path(rng: np.random.Generator, n: int, axpy: Axpy | None) -> list[float]:
    """decode_weights + validate_update + StreamingFedAvg.add, as ``Coordinator`` does."""
    payloads = [encode_weights(cnn_weights(rng)) for _ in range(4)]
    specs = decode_weights(payloads[0]).specs
    aggregator = StreamingFedAvg(CNN_PARAMETERS, axpy=axpy)

    def one(i: int) -> None:
        checked = validate_update(decode_weights(payloads[i % len(payloads)]), specs)
        aggregator.add(checked.vector, 400.0)

    return _per_batch(one, n)


def _reference(updates: list[np.ndarray], n: int) -> list[float]:
    """Not fedlearn code: the same float64 arithmetic without numpy's buffered casting."""
    total = np.zeros(CNN_PARAMETERS)
    scratch = np.empty(CNN_PARAMETERS)

    def one(i: int) -> None:
        scratch[:] = updates[i % len(updates)]
        np.multiply(scratch, 400.0 + i, out=scratch)
        np.add(total, scratch, out=total)

    return _per_call(one, n)


LABELS = ["memory read", "FedAvg add", "numpy alone", "coordinator path", "reference"]
FOLD = "StreamingFedAvg.add (coordinator: BLAS saxpy)"


def run(quick: bool) -> Result:
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):  # as the coordinator
        return _run(quick)


def _run(quick: bool) -> Result:
    n = 100 if quick else 1000
    rng = np.random.default_rng(0)
    passes = 11 if quick else 21
    bandwidth = _bandwidth(0.5, passes=passes)
    memory = max(best for _, best in bandwidth.values())
    updates = _updates(rng)
    nbytes = CNN_PARAMETERS * 4
    axpy = blas_axpy()
    kernels = {
        FOLD: _rates(_fold(updates, n, axpy), nbytes),
        "StreamingFedAvg.add, numpy alone": _rates(_fold(updates, n, None), nbytes),
        "decode + validate + add (coordinator path)": _rates(
            _coordinator_path(rng, n, axpy), nbytes
        ),
        "reference, not fedlearn: cast-copy, scale, add": _rates(_reference(updates, n), nbytes),
    }
    rows: list[list[object]] = [
        [f"memory read: {name} over 512 MiB float32", f"{passes} passes",
         round(median, 2), round(best, 2), round(best / memory, 3)]
        for name, (median, best) in bandwidth.items()
    ]  # fmt: skip
    rows += [
        [name, f"{n} updates", round(median, 2), round(best, 2), round(best / memory, 3)]
        for name, (median, best) in kernels.items()
    ]
    fold_median, fold_best = kernels[FOLD]
    notes = [
        f"Updates: {CNN_PARAMETERS:,} float32 parameters (the CNN, {nbytes / 1e6:.2f} MB), "
        f"{DISTINCT_UPDATES} distinct random vectors cycled; GB/s counts update bytes folded "
        "in (4 bytes per parameter). Each batch (or reference call) is timed on its own: the "
        "median and the best, so that a busy machine (see the load above) shows in the "
        "median only.",
        f"Memory bandwidth: the best single-thread numpy streaming read ({memory:.1f} GB/s). "
        f"StreamingFedAvg is single-threaded too. It holds {BATCH} updates back and folds "
        "them together: block by block, their weighted sum is formed in float32 in a "
        "cache-sized scratch and added to the float64 running sum (13.3 MB), so the sum "
        f"is read and written once per {BATCH} updates instead of once per update. Within "
        "a block, numpy needs a multiply pass and an add pass per update; the coordinator "
        "hands the fold BLAS's saxpy (SciPy's, one thread), which does both in one pass, "
        "and the target is judged on that row. The fedlearn rows are timed per batch of "
        "calls (one fold each), divided by the batch size. The reference row folds each "
        "update alone in float64, as fedlearn did before (20 bytes of memory traffic per "
        "4-byte parameter).",
        "The coordinator-path row adds what the coordinator does per update besides the "
        "fold: header parsing, the finite check and the update's norm "
        "(fedlearn.core.validation.validate_update).",
    ]
    if os.environ.get("OPENBLAS_CORETYPE"):
        notes.append(
            f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} was set (affects "
            "only BLAS calls, not these numpy reductions)."
        )
    return Result(
        name="aggregation",
        title="Streaming FedAvg throughput",
        columns=COLUMNS,
        rows=rows,
        targets=[
            Target(
                name="streaming aggregation vs memory bandwidth",
                target=">= 0.5 of the measured bandwidth",
                measured=(
                    f"{fold_best:.2f} GB/s = {fold_best / memory:.2f} of {memory:.1f} GB/s "
                    f"(median call {fold_median:.2f} GB/s)"
                ),
                met=fold_best >= 0.5 * memory,
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
                        "best call",
                        x=LABELS,
                        y=[memory, *(best for _, best in kernels.values())],
                    ),
                    Series(
                        "median call",
                        x=LABELS,
                        y=[
                            max(median for median, _ in bandwidth.values()),
                            *(median for median, _ in kernels.values()),
                        ],
                    ),
                ],
            )
        ],
        data={
            "bandwidth_gbs": {k: {"median": m, "best": b} for k, (m, b) in bandwidth.items()},
            "kernels_gbs": {k: {"median": m, "best": b} for k, (m, b) in kernels.items()},
            "updates_timed": n,
            "parameters": CNN_PARAMETERS,
        },
    )
