"""The `ossrag` command: a thin typer shell over the engine."""

from ossrag.cli.app import main

__all__ = ["main"]
