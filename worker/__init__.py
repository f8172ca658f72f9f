"""tierq's worker side: the job contract and settings (shared with producers), and the Celery
worker that runs Chat Completions calls. Importing this package imports neither Celery nor
`openai`; only `worker.app`, `worker.tasks`, `worker.completions` and `worker.cli` do.
"""
