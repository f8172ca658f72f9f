"""tierq's producer side: the Python clients, the `tierq` job commands and the HTTP gateway.

Apps import the clients from `tierq` (`from tierq import TierqClient`). This side imports the
shared core (`tierq.core`), never the worker side (`tierq.worker`) or `openai`'s client.
"""
