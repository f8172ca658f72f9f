"""`python -m tierq_simulator`: run the simulator without the tierq root CLI."""

from tierq_simulator.cli import simulator_command

if __name__ == "__main__":
    simulator_command(prog_name="python -m tierq_simulator")
