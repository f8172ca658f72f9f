"""The OpenAI Batches API over tierq's queues. (To be written.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["batches"])


@asynccontextmanager
async def finalizer(gateway: Any) -> AsyncIterator[None]:
    """The background task that finalizes finished batches while the gateway runs."""
    yield
