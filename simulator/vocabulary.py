"""The fixed vocabulary simulated answers are written in.

Every word is plain letters, so each is exactly one token for `simulator.tokens`; that is
what lets an answer of N generated words report `completion_tokens == N` and stream as N
content deltas.
"""

from random import Random

WORDS: tuple[str, ...] = (
    "the", "a", "queue", "worker", "model", "token", "request", "answer", "budget", "limit",
    "retry", "batch", "signal", "stream", "window", "context", "result", "task", "tier",
    "latency", "cache", "shard", "quiet", "steady", "bright", "swift", "careful", "simple",
    "durable", "prompt", "reply", "engine", "river", "mountain", "lantern", "harbor", "garden",
    "orbit", "pattern", "measure", "balance", "thread", "harvest", "ledger", "compass", "beacon",
    "moves", "holds", "waits", "sends", "returns", "builds", "checks", "keeps", "finds", "reads",
    "writes", "counts", "and", "or", "with", "from", "into", "over", "under", "beside", "after",
    "before", "while", "because", "so", "then", "every", "each", "some", "many", "few", "one",
    "two", "three", "small", "large", "early", "late", "clear", "final", "first", "next",
)  # fmt: skip


def phrase(rng: Random, count: int) -> str:
    """`count` random words joined by spaces."""
    return " ".join(rng.choices(WORDS, k=count))
