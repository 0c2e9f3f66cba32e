"""``python -m fedlearn`` runs the CLI."""

from fedlearn.cli.main import main

main()
