"""Benchmark scripts: each starts its own simulator and workers and prints its figures."""
