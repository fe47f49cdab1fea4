"""`python -m ossrag` runs the CLI."""

from ossrag.cli import main

main()
