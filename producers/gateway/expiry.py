"""The API's bounds on `expires_after[seconds]`, shared by file uploads (files.py) and batch
output files (batch_models.py): one hour to thirty days."""

from __future__ import annotations

MIN_EXPIRES_AFTER_SECONDS = 3_600
MAX_EXPIRES_AFTER_SECONDS = 30 * 86_400
