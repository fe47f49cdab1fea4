"""`python -m ossrag` runs the CLI."""

from ossrag.cli.app import main

main()
