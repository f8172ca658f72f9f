"""`python -m tierq` is the `tierq` command."""

from tierq.cli import main

main()
