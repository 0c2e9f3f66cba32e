"""What a benchmark reports, and how it is saved, plotted, printed and rendered.

A benchmark module returns a :class:`Result`; the runner adds the run's facts
(:func:`to_document`), saves it as ``<out>/<name>.json`` (:func:`save_document`),
draws its figures (:func:`draw_plots`) and regenerates ``BENCHMARKS.md`` from every
JSON file in ``<out>`` (:func:`write_markdown`), including files written by other
tools that follow the same contract.

The JSON contract, one file per benchmark::

    {
      "name": "aggregation",                       # the file's stem
      "title": "Streaming FedAvg throughput",
      "command": "python -m benchmarks aggregation", # exact command line that produced it
      "date": "2025-01-01T12:00:00+00:00",          # ISO 8601, UTC
      "machine": {"cpu": "...", "simd": "AVX2", "cores": 2, "ram_gb": 23.4,
                  "load_1min": 0.5, "cnn_epoch_cpu_s": 1.0},  # see benchmarks.calibration
      "versions": {"python", "fedlearn", "torch", "numpy", "grpcio"},   # name -> version
      "mode": "quick" | "full",
      "table": {"columns": ["..."], "rows": [["..."]]},   # cells: str, int, float, bool, null
      "targets": [{"name": "...", "target": "...", "measured": "...", "met": true}],
      "plots": ["aggregation.png"],               # relative to the JSON file's folder
      "notes": ["..."],
      "data": {}                                  # optional: raw measurements, free form
    }
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedlearn.cli.processes import usable_cores

__all__ = [
    "REPO_ROOT",
    "Plot",
    "Result",
    "Series",
    "Target",
    "command_line",
    "draw_plots",
    "format_cell",
    "load_documents",
    "machine_info",
    "print_document",
    "render_markdown",
    "save_document",
    "to_document",
    "versions",
    "write_markdown",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SECTION_ORDER = (
    "aggregation", "transport", "scale", "latency", "accuracy", "flower", "chaos",
    "privacy_attacks",
)  # fmt: skip
VERSION_PACKAGES = ("fedlearn", "torch", "numpy", "grpcio")


@dataclass(frozen=True, slots=True)
class Target:
    """A figure to reach, and what this run measured."""

    name: str
    target: str
    measured: str
    met: bool


@dataclass(frozen=True, slots=True)
class Series:
    """One line (or one group of bars) of a plot."""

    label: str
    x: Sequence[float | str]
    y: Sequence[float | None]
    style: str = "o-"


@dataclass(frozen=True, slots=True)
class Plot:
    """A figure the runner draws into ``<out>/<file>``."""

    file: str
    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    kind: str = "line"
    """``line``, or ``bar`` (the first series' ``x`` are the categories)."""
    logx: bool = False
    logy: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """What one benchmark measured, before the runner adds the run's facts."""

    name: str
    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    targets: Sequence[Target] = ()
    notes: Sequence[str] = ()
    figures: Sequence[Plot] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


# -- facts about the run --------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model and SIMD extension, usable cores, RAM (GiB), the 1-minute load average
    right now and the CPU seconds of one CNN epoch on 400 images
    (:mod:`benchmarks.calibration`)."""
    # torch takes seconds to import: only where a run is measured, not to render a report
    from benchmarks import calibration  # noqa: PLC0415

    cores = usable_cores()
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "simd": calibration.simd_extension(),
        "cores": cores,
        "ram_gb": _ram_gb(),
        "load_1min": load,
        "cnn_epoch_cpu_s": calibration.cnn_epoch_cpu_seconds(),
    }


def versions() -> dict[str, str]:
    """Python and the packages whose speed the figures depend on."""
    found = {"python": platform.python_version()}
    for package in VERSION_PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process, the interpreter shown relative to the cwd."""
    args = list(argv if argv is not None else getattr(sys, "orig_argv", sys.argv))
    if args:
        with contextlib.suppress(ValueError):
            args[0] = os.path.relpath(args[0]) if Path(args[0]).is_absolute() else args[0]
        if args[0].startswith("../"):
            args[0] = Path(args[0]).name
    return shlex.join(args)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def to_document(
    result: Result,
    *,
    mode: str,
    command: str,
    plots: Sequence[str] = (),
    machine: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document of ``result`` (see the module docstring)."""
    return {
        "name": result.name,
        "title": result.title,
        "command": command,
        "date": _now_iso(),
        "machine": dict(machine if machine is not None else machine_info()),
        "versions": versions(),
        "mode": mode,
        "table": {"columns": list(result.columns), "rows": [list(r) for r in result.rows]},
        "targets": [
            {"name": t.name, "target": t.target, "measured": t.measured, "met": bool(t.met)}
            for t in result.targets
        ],
        "plots": list(plots),
        "notes": list(result.notes),
        "data": dict(result.data),
    }


# -- files ------------------------------------------------------------------------------


def save_document(document: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically (through a ``.tmp`` file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{document['name']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a benchmark result")


def load_documents(out_dir: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` result in ``out_dir`` that parses, in report order."""
    documents = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and "name" in document:
            documents.append(document)
    return sorted(documents, key=_section_key)


def _section_key(document: Mapping[str, Any]) -> tuple[int, str]:
    name = str(document.get("name", ""))
    rank = SECTION_ORDER.index(name) if name in SECTION_ORDER else len(SECTION_ORDER)
    return rank, name


# -- plots ------------------------------------------------------------------------------


def draw_plots(result: Result, out_dir: Path) -> list[str]:
    """Draw every figure of ``result`` as PNG in ``out_dir``; the file names drawn."""
    if not result.figures:
        return []
    import matplotlib  # noqa: PLC0415 - slow to import, and only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = []
    for figure in result.figures:
        fig, ax = plt.subplots(figsize=(7, 4))
        if figure.kind == "bar":
            _bars(ax, figure)
        else:
            for s in figure.series:
                points = [(x, y) for x, y in zip(s.x, s.y, strict=True) if y is not None]
                ax.plot([p[0] for p in points], [p[1] for p in points], s.style, label=s.label)
        ax.set(title=figure.title, xlabel=figure.xlabel, ylabel=figure.ylabel)
        if figure.logx:
            ax.set_xscale("log")
        elif figure.kind == "line" and _integer_x(figure):
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if figure.logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if len(figure.series) > 1 or figure.kind == "bar":
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / figure.file, dpi=110)
        plt.close(fig)
        drawn.append(figure.file)
    return drawn


def _integer_x(figure: Plot) -> bool:
    return all(isinstance(x, int) for s in figure.series for x in s.x)


def _bars(ax: Any, figure: Plot) -> None:
    categories = [str(c) for c in figure.series[0].x]
    width = 0.8 / len(figure.series)
    for i, s in enumerate(figure.series):
        positions = [k + (i - (len(figure.series) - 1) / 2) * width for k in range(len(s.y))]
        ax.bar(positions, [y or 0.0 for y in s.y], width=width, label=s.label)
    ax.set_xticks(range(len(categories)), categories, fontsize=8)


# -- text -------------------------------------------------------------------------------


def _format_float(value: float) -> str:
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
    return f"{value:.3g}"


def format_cell(value: Any) -> str:
    """A table cell as text: ``-`` for null, 3-4 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return _format_float(value)
    return str(value)


def print_document(document: Mapping[str, Any], console: Console | None = None) -> None:
    """The document's table, its targets and notes, on the terminal."""
    console = console or Console()
    table = Table(*document["table"]["columns"], title=f"{document['title']} ({document['mode']})")
    for row in document["table"]["rows"]:
        table.add_row(*(format_cell(c) for c in row))
    console.print(table)
    for target in document.get("targets", []):
        mark = "[green]met[/]" if target["met"] else "[red]NOT met[/]"
        console.print(
            f"  {mark}  {escape(target['name'])}: {escape(target['measured'])} "
            f"(target {escape(target['target'])})"
        )
    for note in document.get("notes", []):
        console.print(f"  [dim]- {escape(note)}[/]")  # notes quote logs: no markup


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_escape(str(c)) for c in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_md_escape(format_cell(c)) for c in row) + " |" for row in rows]
    return lines


def _machine_line(document: Mapping[str, Any]) -> str:
    m = document.get("machine", {})
    v = document.get("versions", {})
    load = f", load {m['load_1min']} at start" if m.get("load_1min") is not None else ""
    simd = f" ({m['simd']})" if m.get("simd") else ""
    speed = (
        f"; one CNN epoch on 400 images took {m['cnn_epoch_cpu_s']} CPU-s"
        if m.get("cnn_epoch_cpu_s") is not None
        else ""
    )
    packages = ", ".join(f"{k} {val}" for k, val in v.items())
    return (
        f"Machine: {m.get('cpu', '?')}{simd}, {m.get('cores', '?')} cores, "
        f"{m.get('ram_gb', '?')} GiB RAM{load}{speed}. Versions: {packages}."
    )


def _section(document: Mapping[str, Any], plot_prefix: str) -> list[str]:
    lines = [f"## {document['title']} (`{document['name']}`)", ""]
    lines.append(
        f"`{document.get('command', '?')}`, {document.get('mode', '?')} mode, "
        f"{document.get('date', '?')}."
    )
    lines += ["", _machine_line(document), ""]
    table = document.get("table", {})
    lines += [*_md_table(table.get("columns", []), table.get("rows", [])), ""]
    targets = document.get("targets", [])
    if targets:
        lines += _md_table(
            ["target", "goal", "measured", "met"],
            [[t["name"], t["target"], t["measured"], bool(t["met"])] for t in targets],
        )
        lines.append("")
    lines += [f"- {_md_escape(note)}" for note in document.get("notes", [])]
    if document.get("notes"):
        lines.append("")
    for plot in document.get("plots", []):
        lines += [f"![{plot}]({plot_prefix}{plot})", ""]
    return lines


def render_markdown(documents: Sequence[Mapping[str, Any]], *, plot_prefix: str = "") -> str:
    """BENCHMARKS.md: a summary of every target, then one section per benchmark."""
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks`: edit benchmarks/, not this file. -->",
        "",
        "Rerun with `.venv/bin/python -m benchmarks` (quick mode, every benchmark), "
        "`python -m benchmarks NAME...` (some), `--full` (full mode). Each section below "
        "gives the exact command, date, machine and versions of its figures; the raw "
        f"results are in `{plot_prefix or './'}*.json`.",
        "",
    ]
    targets = [
        [d["name"], t["name"], t["target"], t["measured"], bool(t["met"])]
        for d in documents
        for t in d.get("targets", [])
    ]
    if targets:
        lines += ["## Targets", ""]
        lines += _md_table(["benchmark", "target", "goal", "measured", "met"], targets)
        lines.append("")
    for document in documents:
        lines += _section(document, plot_prefix)
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(out_dir: Path, markdown_path: Path) -> Path:
    """Regenerate ``markdown_path`` from every result in ``out_dir``."""
    prefix = os.path.relpath(out_dir.resolve(), markdown_path.resolve().parent)
    prefix = "" if prefix == "." else Path(prefix).as_posix() + "/"
    text = render_markdown(load_documents(out_dir), plot_prefix=prefix)
    markdown_path.write_text(text)
    return markdown_path
