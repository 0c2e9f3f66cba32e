"""Update compression: upload bytes and accuracy per codec, next to uncompressed runs.

Each setting (data set, label-shard non-IID partition, client count, rounds) runs
``fedlearn run`` once per codec with everything else equal (model, seed, rounds,
hyperparameters), so the only difference is ``--update-codec`` (and, in runs named
``UP/DOWN``, ``--download-codec``). Reported per run:
upload bytes per round (what crossed gRPC), the compression against float32
updates, final and best test accuracy and the change against the uncompressed run,
download bytes per round, and the local training time of the slowest client. The
cost of encoding (with error feedback, as clients do) and decoding (as the
coordinator does, with validation) is timed in this process on a CNN-sized update,
before the federations start.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import cnn_weights
from benchmarks.federation import HYPERPARAMETERS, run_federation
from benchmarks.report import Plot, Result, Series, Target
from fedlearn.core.codecs import ErrorFeedbackState, encode_with_feedback, parse_codec
from fedlearn.core.serialization import encode_weights, spec_of
from fedlearn.core.update_payload import decode_update_payload

__all__ = ["run"]

MB = 1e6
NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


FEW_CODECS = ("raw", "sign", "topk:0.01+int8")
ALL_CODECS = (
    "raw", "int8", "sign", "topk:0.05+int8", "topk:0.02+int8", "topk:0.01+int8",
    "topk:0.01+int8/int8",
)  # fmt: skip
"""Chosen for the targets (>= 32x at <= 0.5 points, >= 100x at <= 1 point): top-k with
int8 values is about 45x at 5%, 110x at 2% and 210x at 1%. ``UP/DOWN``:
``--update-codec UP --download-codec DOWN``; without ``/``, whole models go down."""


@dataclass(frozen=True, slots=True)
class Setting:
    dataset: str
    clients: int
    rounds: int
    codecs: tuple[str, ...] = FEW_CODECS


QUICK = (Setting("mnist", 10, 6),)
FULL = (Setting("mnist", 10, 20, ALL_CODECS), Setting("fashion", 10, 5))
"""What fits in about an hour on 2 cores: MNIST with every codec for 20 rounds, and
Fashion-MNIST (a round trains on 60,000 images) with FEW_CODECS for 5 rounds. No
50-client setting: 50 CNN client processes do not fit on 2 cores."""
COLUMNS = (
    "data", "clients", "codec", "upload MB / round", "x smaller", "final accuracy",
    "change (points)", "best accuracy", "download MB / round", "encode ms", "decode ms",
    "slowest client training s",
)  # fmt: skip


def _median_ms(fn: Callable[[], object], repeat: int = 5) -> float:
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return 1e3 * statistics.median(seconds)


def codec_costs(codec: str) -> tuple[float, float]:
    """(encode ms with error feedback, decode + validate ms) for one CNN-sized update."""
    rng = np.random.default_rng(0)
    weights = cnn_weights(rng)
    specs = spec_of(weights)
    vector = np.concatenate([a.ravel() for a in weights.values()])
    if codec == "raw":
        payload = encode_weights(weights)
        return _median_ms(lambda: encode_weights(weights)), _median_ms(
            lambda: decode_update_payload(payload, specs)
        )
    spec = parse_codec(codec)
    state = ErrorFeedbackState.zeros(vector.size)
    payload, _ = encode_with_feedback(vector, state, spec, rng=rng)
    encode = _median_ms(lambda: encode_with_feedback(vector, state, spec, rng=rng))
    return encode, _median_ms(lambda: decode_update_payload(payload, specs))


def _per_round(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows) / MB if rows else 0.0


def _run_setting(setting: Setting) -> list[dict[str, Any]]:
    runs = []
    for codec in setting.codecs:
        print(f"  {NAMES[setting.dataset]}, {setting.clients} clients, {codec} ...", flush=True)
        up, _, down = codec.partition("/")
        fed = run_federation(
            clients=setting.clients,
            rounds=setting.rounds,
            dataset=setting.dataset,
            partitioner="shards",
            extra_args=("--update-codec", up, *(("--download-codec", down) if down else ())),
        )
        rounds = fed.summary["rounds"]
        curve = [r["accuracy"] for r in rounds]
        runs.append(
            {
                "codec": codec,
                "curve": curve,
                "final": curve[-1] if curve else None,
                "best": max((a for a in curve if a is not None), default=None),
                "up_mb": _per_round(rounds, "bytes_up"),
                "down_mb": _per_round(rounds, "bytes_down"),
                "compression": fed.summary.get("upload_compression"),
                "train_s": statistics.median(r["slowest_client_train_seconds"] for r in rounds),
                "command": " ".join(map(str, fed.command)),
            }
        )
    return runs


def _change(run: dict[str, Any], raw: dict[str, Any]) -> float | None:
    if run["final"] is None or raw["final"] is None:
        return None
    return 100 * float(run["final"] - raw["final"])


def _best_ratio(runs: list[dict[str, Any]], raw: dict[str, Any], max_drop: float) -> str:
    ok = [r for r in runs if (c := _change(r, raw)) is not None and c >= -max_drop]
    best = max(ok, key=lambda r: r["compression"] or 0.0, default=None)
    if best is None:
        return "none"
    return f"{best['codec']}: {best['compression']:.0f}x, {_change(best, raw):+.2f} points"


def _targets(results: dict[Setting, list[dict[str, Any]]]) -> list[Target]:
    """Per setting and target: the codecs >= ratio x smaller and <= drop points below raw."""
    targets = []
    for setting, runs in results.items():
        raw = runs[0]
        label = f"{NAMES[setting.dataset]}, {setting.clients} clients, {setting.rounds} rounds"
        for ratio, drop in ((32, 0.5), (100, 1.0)):
            ok = [r for r in runs if (c := _change(r, raw)) is not None and c >= -drop]
            meeting = [r["codec"] for r in ok if (r["compression"] or 0) >= ratio]
            targets.append(
                Target(
                    name=f"{label}: >= {ratio}x fewer upload bytes, <= {drop} points lost",
                    target=f">= {ratio}x at <= {drop} points",
                    measured=f"best within {drop} points: {_best_ratio(runs, raw, drop)}; "
                    f"met by {', '.join(meeting) or 'none'}",
                    met=bool(meeting),
                )
            )
    return targets


def run(quick: bool) -> Result:
    settings = QUICK if quick else FULL
    ups = {c.partition("/")[0] for s in settings for c in s.codecs}
    costs = {codec: codec_costs(codec) for codec in ups}
    results = {s: _run_setting(s) for s in settings}
    rows: list[list[object]] = []
    for setting, runs in results.items():
        raw = runs[0]
        for r in runs:
            change = _change(r, raw)
            rows.append(
                [
                    NAMES[setting.dataset], setting.clients, r["codec"], round(r["up_mb"], 4),
                    round(r["compression"] or 0.0, 1), r["final"],
                    None if change is None else round(change, 2), r["best"],
                    round(r["down_mb"], 2), round(costs[r["codec"].partition("/")[0]][0], 1),
                    round(costs[r["codec"].partition("/")[0]][1], 1), round(r["train_s"], 2),
                ]
            )  # fmt: skip
    return Result(
        name="compression",
        title="Update compression: bytes on the wire and accuracy per codec",
        columns=COLUMNS,
        rows=rows,
        targets=_targets(results),
        notes=[
            f"Every run: fedlearn run, the CNN, label shards (2 per client, non-IID), "
            f"hyperparameters {HYPERPARAMETERS}, same seed and rounds for every codec; "
            "only --update-codec differs (and --download-codec in runs named UP/DOWN). "
            "Accuracy is the server-side test accuracy after "
            "the last round; 'change' is against the raw (uncompressed) run of the setting.",
            "Codecs: raw = float32 named tensors; int8 = 8-bit codes with one scale for the "
            "whole update; sign = 1 bit per value times the mean magnitude; "
            "topk:F = the F largest magnitudes, indices delta-coded as varints under zlib; "
            "'+' composes (values of the top-k then quantised). Lossy codecs use error "
            "feedback on the client (what was not sent is added to the next update).",
            "x smaller = float32 update bytes / payload bytes, summed over the run "
            "(summary.json upload_compression). Upload MB / round is what crossed gRPC.",
            "Encode ms: encode_with_feedback on a 1,663,370-parameter CNN update (what a "
            "client does per round); decode ms: the coordinator's decode and validation "
            "(finite check and norm). Both single-threaded, in this process.",
            "Download MB / round: whole float32 models, except in runs named UP/DOWN "
            "(--download-codec DOWN): clients that hold the previous model get only its "
            "quantised change (median over rounds; round 1 is always whole).",
            "Encode and decode times are measured before the federations of this benchmark "
            "start, while anything else on the machine runs: see the load at start above.",
        ],
        figures=[
            Plot(
                file=f"compression_{s.dataset}_{s.clients}.png",
                title=f"{NAMES[s.dataset]}, {s.clients} clients: accuracy per round per codec",
                xlabel="round",
                ylabel="test accuracy",
                series=[
                    Series(r["codec"], x=list(range(1, len(r["curve"]) + 1)), y=r["curve"])
                    for r in runs
                ],
            )
            for s, runs in results.items()
        ],
        data={
            f"{s.dataset}_{s.clients}": [
                {k: v for k, v in r.items() if k != "command"} | {"command": r["command"]}
                for r in runs
            ]
            for s, runs in results.items()
        },
    )
