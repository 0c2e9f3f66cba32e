"""The benchmark report: the JSON contract, BENCHMARKS.md, and the small pure helpers."""

import json
import math

from benchmarks.calibration import simd_extension
from benchmarks.common import CNN_PARAMETERS, CNN_SHAPES
from benchmarks.federation import rounds_to
from benchmarks.report import (
    Plot,
    Result,
    Series,
    Target,
    draw_plots,
    format_cell,
    load_documents,
    save_document,
    to_document,
    write_markdown,
)

CONTRACT_KEYS = {
    "name", "title", "command", "date", "machine", "versions", "mode", "table", "targets",
    "plots", "notes", "data",
}  # fmt: skip


def sample_result(name: str = "aggregation") -> Result:
    return Result(
        name=name,
        title="Streaming FedAvg throughput",
        columns=["kernel", "GB/s"],
        rows=[["memory read", 20.5], ["StreamingFedAvg.add", 2.75]],
        targets=[Target("aggregation vs bandwidth", ">= 0.5", "0.13", met=False)],
        notes=["a | pipe stays inside its cell"],
        figures=[Plot("agg.png", "t", "x", "y", [Series("s", [1, 2], [3.0, None])])],
    )


def test_document_follows_the_json_contract(tmp_path):
    document = to_document(sample_result(), mode="quick", command="python -m benchmarks")

    assert set(document) == CONTRACT_KEYS
    assert document["table"] == {
        "columns": ["kernel", "GB/s"],
        "rows": [["memory read", 20.5], ["StreamingFedAvg.add", 2.75]],
    }
    assert document["targets"] == [
        {"name": "aggregation vs bandwidth", "target": ">= 0.5", "measured": "0.13", "met": False}
    ]
    assert {"cpu", "simd", "cores", "ram_gb", "cnn_epoch_cpu_s"} <= set(document["machine"])
    assert document["machine"]["cnn_epoch_cpu_s"] > 0  # measured, once per process
    assert {"python", "fedlearn", "torch", "numpy", "grpcio"} <= set(document["versions"])
    path = save_document(document, tmp_path)
    assert path == tmp_path / "aggregation.json"
    assert json.loads(path.read_text()) == document
    assert not list(tmp_path.glob("*.tmp"))


def test_markdown_is_rebuilt_from_every_result_including_other_tools(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    machine = {"cpu": "EPYC", "simd": "AVX2", "cores": 2, "ram_gb": 23.5, "load_1min": 0.2,
               "cnn_epoch_cpu_s": 1.05}  # fmt: skip
    save_document(
        to_document(
            sample_result(), mode="quick", command="cmd a", plots=["agg.png"], machine=machine
        ),
        results,
    )
    older = {"cpu": "EPYC", "cores": 2, "ram_gb": 23.5, "load_1min": 0.2}  # before calibration
    other = to_document(sample_result("flower"), mode="full", command="cmd b", machine=older)
    other["title"] = "Flower side by side"
    save_document(other, results)
    (results / "broken.json").write_text("{not json")

    text = write_markdown(results, tmp_path / "BENCHMARKS.md").read_text()

    assert text.index("(`aggregation`)") < text.index("(`flower`)")
    assert "Flower side by side" in text and "`cmd b`, full mode" in text
    assert (
        "Machine: EPYC (AVX2), 2 cores, 23.5 GiB RAM, load 0.2 at start; one CNN epoch on "
        "400 images took 1.05 CPU-s." in text
    )
    assert "Machine: EPYC, 2 cores, 23.5 GiB RAM, load 0.2 at start. Versions" in text
    assert "| memory read | 20.5 |" in text
    assert "| aggregation | aggregation vs bandwidth | >= 0.5 | 0.13 | no |" in text
    assert "a \\| pipe stays inside its cell" in text
    assert "![agg.png](benchmarks/results/agg.png)" in text
    assert [d["name"] for d in load_documents(results)] == ["aggregation", "flower"]


def test_the_widest_simd_extension_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    for flags, expected in (
        ("fpu sse4_2 avx avx2 avx512f avx512bw", "AVX-512"),
        ("fpu sse4_2 avx fma avx2", "AVX2"),
        ("fpu sse2", None),
    ):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert simd_extension(cpuinfo) == expected
    assert simd_extension(tmp_path / "missing") is None


def test_plots_are_drawn_as_png(tmp_path):
    assert draw_plots(sample_result(), tmp_path) == ["agg.png"]
    assert (tmp_path / "agg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cells_are_formatted_for_reading():
    assert [format_cell(v) for v in (None, True, 7, 12_345, 0.0, 0.012345, 2.345, 35.26, 1234.5)] == [
        "-", "yes", "7", "12,345", "0", "0.0123", "2.35", "35.3", "1,234",
    ]  # fmt: skip


def test_rounds_to_reports_the_first_round_at_or_above_each_threshold():
    accuracies = [0.5, None, 0.92, 0.91, 0.96]
    assert rounds_to(accuracies, (0.91, 0.95, 0.99)) == {"91%": 3, "95%": 5, "99%": None}


def test_synthetic_updates_have_the_cnn_size():
    assert sum(math.prod(shape) for shape in CNN_SHAPES.values()) == CNN_PARAMETERS
