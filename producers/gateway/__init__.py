"""The HTTP gateway: tierq's job API, and the OpenAI Files and Batches API, for any backend.

`tierq gateway` serves `create_app()`; see producers/gateway/app.py for the routes.
"""

from tierq.producers.gateway.app import create_app

__all__ = ["create_app"]
