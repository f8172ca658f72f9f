"""`python -m tierq` is the `tierq` command."""

from tierq.producers.cli import main

main()
