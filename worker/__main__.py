"""`python -m tierq.worker --tier fast`: the same as `tierq worker`."""

from tierq.worker.cli import worker_command

if __name__ == "__main__":
    worker_command(prog_name="tierq worker")
