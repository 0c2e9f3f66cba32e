"""fedlearn's benchmark suite: ``python -m benchmarks [NAMES...] [--full] [--out DIR]``.

Each benchmark is a module with ``run(quick: bool) -> benchmarks.report.Result``.
The runner (:mod:`benchmarks.__main__`) prints a table per benchmark, writes
``<out>/<name>.json`` and PNG plots, and regenerates ``BENCHMARKS.md`` from every
``<out>/*.json`` present (see :mod:`benchmarks.report` for the JSON contract).
"""

__all__: list[str] = []
