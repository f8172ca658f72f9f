"""`python -m producers` is the `tierq` command."""

from producers.cli import main

main()
