"""The ``fedlearn`` command line (Typer); ``fedlearn.cli.main:main`` is the entry point."""

__all__: list[str] = []
