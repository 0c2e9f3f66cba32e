"""``python -m benchmarks [NAMES...] [--full] [--out DIR] [--markdown FILE]``.

Runs the named benchmarks (when none is named, all but flower, compression and
cluster_chaos, which install things or take long) in quick mode, or
full mode with ``--full``; prints a table per benchmark; writes
``<out>/<name>.json`` and PNG plots; and regenerates ``BENCHMARKS.md`` from every
``<out>/*.json`` present, including results of other tools (``flower.json``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console

from benchmarks.report import (
    REPO_ROOT,
    command_line,
    draw_plots,
    machine_info,
    print_document,
    save_document,
    to_document,
    write_markdown,
)

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS = {
    "aggregation": "benchmarks.aggregation",
    "transport": "benchmarks.transport",
    "scale": "benchmarks.scale",
    "latency": "benchmarks.latency",
    "accuracy": "benchmarks.accuracy",
    "chaos": "benchmarks.chaos",
    "privacy_attacks": "benchmarks.privacy_attacks",
    "dp_accuracy": "benchmarks.dp_accuracy",
}
"""Run by default, in this order."""
OPTIONAL = {
    "flower": "benchmarks.flower_compare",
    "compression": "benchmarks.compression",
    "cluster_chaos": "benchmarks.cluster_chaos",
}
"""Run only when named (they install things or take long)."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {', '.join([*BENCHMARKS, *OPTIONAL])}"
    )
    parser.add_argument("--full", action="store_true", help="full mode (slow) instead of quick")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results", help="results folder"
    )
    parser.add_argument(
        "--markdown", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="report to regenerate"
    )
    parser.add_argument(
        "--no-markdown", action="store_true", help="do not regenerate the markdown report"
    )
    args = parser.parse_args(argv)
    known = {**BENCHMARKS, **OPTIONAL}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(known)}")
    return args


def _run_one(name: str, *, quick: bool, out: Path, command: str, console: Console) -> bool:
    module = importlib.import_module({**BENCHMARKS, **OPTIONAL}[name])
    console.rule(f"[bold]{name}[/] ({'quick' if quick else 'full'} mode)")
    machine = machine_info()  # the load before the benchmark runs
    started = time.monotonic()
    try:
        result = module.run(quick)
    except Exception:  # one broken benchmark must not lose the others' results
        console.print(f"[red]{name} failed after {time.monotonic() - started:.0f} s[/]")
        console.print(traceback.format_exc())
        return False
    plots = draw_plots(result, out)
    document = to_document(
        result, mode="quick" if quick else "full", command=command, plots=plots, machine=machine
    )
    path = save_document(document, out)
    print_document(document, console)
    console.print(f"  {time.monotonic() - started:.0f} s; wrote {path} and {len(plots)} plot(s)")
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    command = command_line()
    names = args.names or list(BENCHMARKS)
    failed = [
        name
        for name in names
        if not _run_one(name, quick=not args.full, out=args.out, command=command, console=console)
    ]
    if not args.no_markdown:
        console.print(f"regenerated {write_markdown(args.out, args.markdown)}")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
