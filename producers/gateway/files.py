"""The OpenAI Files API, for batch input and output files. (To be written.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["files"])
