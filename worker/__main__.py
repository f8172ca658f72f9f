"""`python -m worker --tier fast`: the same as `tierq worker`."""

from worker.cli import worker_command

if __name__ == "__main__":
    worker_command(prog_name="tierq worker")
