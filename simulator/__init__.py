"""An OpenAI-compatible Chat Completions server for tierq's demo, tests and benchmarks.

It stands in for the real API so that every path of a client, success, streaming,
structured output, tool calls, rate limits and each kind of failure, can be driven
deterministically, at speed and without cost. Answers match the API's shapes closely
enough for the official `openai` SDK to parse them into its own types.

Run it with `python -m tierq_simulator` (or `tierq simulator`); build it in-process with
`simulator.app.create_app`. Failures are requested per request with `[sim ...]` directives
in message text (see `simulator.directives`) or at random with `--fail-rate`.
"""
