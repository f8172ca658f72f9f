"""GET /v1/jobs/{id}/events: a job's status changes and streamed deltas as Server-Sent Events.

(To be written: see the gateway issue.)
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["jobs"])
