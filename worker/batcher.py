"""The batcher thread of a worker: jobs with far deadlines through the provider's Batch API.

Every worker of a tier runs one (no service of its own to deploy). Each step it:

1. forms a batch when its tier's pool holds `TIERQ_SPEND__BATCH_MAX_LINES` jobs or the last
   one was formed `TIERQ_SPEND__BATCH_COLLECT_SECONDS` ago, uploads it as JSONL through the
   Files API and creates the provider batch, `metadata.tierq_batch` naming it;
2. takes over a batch whose former lapsed mid-way, adopting the provider batch if one was
   created under its name (so a batch is never created twice) or creating it;
3. asks each batch in flight, every `TIERQ_SPEND__BATCH_POLL_SECONDS`, whether it has ended,
   and cancels one that comes too close to its earliest deadline;
4. collects an ended batch: each answer settles its job (priced at the Batch API's half price),
   a refused request fails its job, and every job without an answer (expired, cancelled, or a
   transient error) is handed to the reaper to run on the queue in time for its deadline.

The Redis side, and why no crash loses or pays twice for a job: tierq/core/provider_batches.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import openai
import structlog

from tierq.core.contract import JobEnvelope
from tierq.core.jobstore import JobStore
from tierq.core.pricing import cost_usd
from tierq.core.provider_batches import (
    POLL_LEASE_SECONDS,
    STATE_FORMING,
    STATE_SUBMITTED,
    SUBMIT_LEASE_SECONDS,
    ProviderBatch,
    ProviderBatches,
    batch_token,
)
from tierq.core.results import ChatCompletion, JobError, JobStatus
from tierq.core.settings import Settings
from tierq.core.tiers import api_params
from tierq.worker import metrics

log = structlog.get_logger("tierq.worker")

IDLE_SECONDS = 1.0
CHAT_URL = "/v1/chat/completions"
# The Batch API bills half the standard price (OpenAI's batch guide).
BATCH_DISCOUNT = 0.5
ENDED = frozenset({"completed", "expired", "cancelled", "failed"})
# A refused request fails its job, as the same request on the queue would; anything else
# without an answer runs on the queue.
PERMANENT = frozenset({400, 401, 403, 404, 422})
# A takeover looks for the provider batch created under a batch's name among the provider's
# batches (newest first, a page at a time) created since a little before the batch was formed.
ADOPT_PAGE = 100
ADOPT_SLACK_SECONDS = 3_600


class Batcher:
    """Sends one tier's far-deadline jobs through the provider's Batch API."""

    def __init__(
        self, settings: Settings, tier: str, store: JobStore, client: openai.OpenAI
    ) -> None:
        self._settings = settings
        self._tier = tier
        self._store = store
        self._client = client
        self._batches = ProviderBatches(store.redis, settings)
        self._token = uuid.uuid4().hex  # this batcher's claims
        self._next_poll: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tierq-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(IDLE_SECONDS):
            try:
                self.step()
            except Exception as error:
                # Redis or the provider away, or anything else: the thread goes on. The pool
                # and the batches wait in Redis, and the watch list runs their jobs on the
                # queue if they are given up meanwhile.
                log.warning("batch.step_failed", error=str(error), kind=type(error).__name__)

    def step(self) -> None:
        self._form()
        open_ids = self._batches.open_batches(self._tier)
        for batch_id in set(self._next_poll) - set(open_ids):
            del self._next_poll[batch_id]  # collected, here or by another worker
        for batch_id in open_ids:
            # One batch's trouble never stops the others'.
            try:
                self._step_one(batch_id)
            except Exception as error:
                log.warning(
                    "batch.step_failed", batch_id=batch_id, error=str(error),
                    kind=type(error).__name__,
                )  # fmt: skip

    def _step_one(self, batch_id: str) -> None:
        batch = self._batches.get(batch_id)
        if batch is None:
            return
        if batch.state == STATE_FORMING and self._batches.claim(
            batch_id, STATE_FORMING, SUBMIT_LEASE_SECONDS, self._token
        ):
            try:
                self._submit(batch, fresh=False)
            finally:
                self._batches.release(batch_id, self._token)
        elif batch.state == STATE_SUBMITTED:
            self._poll(batch)

    # --- forming and submitting ------------------------------------------------------------

    def _form(self) -> None:
        spend = self._settings.spend
        pooled = self._batches.pooled(self._tier)
        if not pooled:
            return
        since = time.time() - self._batches.last_formed(self._tier)
        if pooled < spend.batch_max_lines and since < spend.batch_collect_seconds:
            return
        self._batches.formed_now(self._tier)
        taken = self._batches.take(self._tier, spend.batch_max_lines, self._token)
        if taken is None:
            return
        batch = self._batches.get(taken[0])
        if batch is not None:
            try:
                self._submit(batch, fresh=True)
            finally:
                self._batches.release(batch.batch_id, self._token)

    def _submit(self, batch: ProviderBatch, *, fresh: bool) -> None:
        """Create the provider batch of a formed one (held), or adopt the one created already
        under its name (`fresh`: this batcher formed it just now, so there is none)."""
        if time.time() >= self._cancel_at(batch):
            # Too late to be worth sending (after an outage): the jobs run on the queue now.
            self._batches.run_on_queue(batch.job_ids)
            self._batches.done(self._tier, batch.batch_id)
            log.warning("batch.not_sent", batch_id=batch.batch_id, reason="near its deadline")
            return
        adopted = None if fresh else self._created_already(batch)
        if adopted is not None:
            self._batches.submitted(batch.batch_id, adopted)
            log.info("batch.adopted", batch_id=batch.batch_id, provider_batch=adopted)
            return
        lines = self._lines(batch.job_ids)
        if not lines:
            self._batches.done(self._tier, batch.batch_id)  # every job gone meanwhile
            return
        upload = self._client.files.create(
            file=(f"tierq-{batch.batch_id}.jsonl", "\n".join(lines).encode() + b"\n"),
            purpose="batch",
        )
        created = self._client.batches.create(
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"tierq_batch": batch.batch_id},
        )
        self._batches.submitted(batch.batch_id, created.id)
        log.info(
            "batch.submitted", batch_id=batch.batch_id, provider_batch=created.id, jobs=len(lines)
        )

    def _created_already(self, batch: ProviderBatch) -> str | None:
        """The provider batch created under `batch`'s name by a worker that died before it
        could say so; None if there is none. The SDK's list pages through the provider's
        batches, newest first, until they predate the batch's forming."""
        since = batch.formed_at - ADOPT_SLACK_SECONDS
        for provider in self._client.batches.list(limit=ADOPT_PAGE):
            if (provider.metadata or {}).get("tierq_batch") == batch.batch_id:
                return provider.id
            if provider.created_at < since:
                return None
        return None

    def _lines(self, job_ids: list[str]) -> list[str]:
        """The batch's input lines: each job's request, as its call would send it."""
        pipe = self._store.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self._store.key(job_id), "status", "message")
        lines = []
        for job_id, (status, message) in zip(job_ids, pipe.execute(), strict=True):
            if message is None or status != b"queued":
                continue  # cancelled, or gone, meanwhile
            envelope = JobEnvelope.model_validate(json.loads(message))
            info = self._settings.model_info(envelope.request.model)
            body = api_params(envelope.request, info)
            lines.append(
                json.dumps(
                    {"custom_id": job_id, "method": "POST", "url": CHAT_URL, "body": body},
                    separators=(",", ":"),
                )
            )
        return lines

    # --- polling and collecting ------------------------------------------------------------

    def _poll(self, batch: ProviderBatch) -> None:
        now = time.time()
        if now < self._next_poll.get(batch.batch_id, 0.0) or batch.provider_id is None:
            return
        if not self._batches.claim(
            batch.batch_id, STATE_SUBMITTED, POLL_LEASE_SECONDS, self._token
        ):
            return
        self._next_poll[batch.batch_id] = now + self._settings.spend.batch_poll_seconds
        try:
            provider = self._client.batches.retrieve(batch.provider_id)
            if provider.status in ENDED:
                self._collect(batch, provider)
                self._next_poll.pop(batch.batch_id, None)
                return
            if not batch.cancel_sent and now >= self._cancel_at(batch):
                # Too close to the earliest deadline: what has not run will run on the queue.
                self._client.batches.cancel(batch.provider_id)
                self._batches.cancel_sent(batch.batch_id)
                log.warning("batch.cancelled_for_deadline", batch_id=batch.batch_id)
        finally:
            self._batches.release(batch.batch_id, self._token)

    def _cancel_at(self, batch: ProviderBatch) -> float:
        """When to cancel a batch still running: early enough before it is given up (when the
        reaper runs its jobs on the queue) for the provider to finish cancelling."""
        spend = self._settings.spend
        lead = max(2 * spend.batch_poll_seconds, spend.batch_margin_seconds / 4)
        return batch.give_up_at - lead

    def _collect(self, batch: ProviderBatch, provider: Any) -> None:
        answered: dict[str, dict[str, Any]] = {}
        for file_id in (provider.output_file_id, provider.error_file_id):
            if file_id:
                for line in self._client.files.content(file_id).text.splitlines():
                    if line.strip():
                        entry = json.loads(line)
                        answered[str(entry.get("custom_id"))] = entry
        rerun: list[str] = []
        settled = failed = 0
        for job_id in batch.job_ids:
            response = (answered.get(job_id) or {}).get("response") or {}
            status = response.get("status_code")
            if status == 200:
                settled += self._settle_answer(batch, job_id, response.get("body") or {})
            elif status in PERMANENT:
                failed += self._settle_refusal(
                    batch.batch_id, job_id, status, response.get("body") or {}
                )
            else:
                rerun.append(job_id)  # expired, cancelled, or a transient error
        self._batches.run_on_queue(rerun)
        self._batches.done(self._tier, batch.batch_id)
        log.info(
            "batch.collected",
            batch_id=batch.batch_id,
            provider_batch=batch.provider_id,
            status=provider.status,
            succeeded=settled,
            failed=failed,
            run_on_queue=len(rerun),
        )

    def _settle_answer(self, batch: ProviderBatch, job_id: str, body: dict[str, Any]) -> int:
        record = self._store.get(job_id)
        if record is None:
            return 0
        completion = ChatCompletion.model_validate(body)
        usage = completion.usage
        at_default = self._settings.price_of(record.model)
        cost = at_default_cost = None
        if usage is not None and at_default is not None:
            at_default_cost = cost_usd(usage, at_default)
            cost = at_default_cost * BATCH_DISCOUNT
        result = record.model_copy(
            update={
                "status": JobStatus.SUCCEEDED,
                "response": completion,
                "usage": usage,
                "answered_by": completion.model,
                "attempts": record.attempts + 1,
                "started_at": datetime.fromtimestamp(batch.formed_at, UTC),
                "finished_at": datetime.now(UTC),
                "cost_usd": cost,
                "cost_at_default_usd": at_default_cost,
                "service_tier_chosen": "batch",
                "error": None,
            }
        )
        metrics.observe_bill(result)
        if self._store.settle(result, batch_token(batch.batch_id)):
            metrics.observe_outcome(result)
            return 1
        return 0

    def _settle_refusal(self, batch_id: str, job_id: str, status: int, body: dict[str, Any]) -> int:
        record = self._store.get(job_id)
        if record is None:
            return 0
        error = body.get("error") or {}
        result = record.model_copy(
            update={
                "status": JobStatus.FAILED,
                "attempts": record.attempts + 1,
                "finished_at": datetime.now(UTC),
                "error": JobError(
                    type="bad_request" if status in (400, 404, 422) else "permission_denied",
                    message=str(error.get("message", "refused by the provider's Batch API")),
                    status_code=status,
                    code=error.get("code"),
                    param=error.get("param"),
                    api_type=error.get("type"),
                ),
            }
        )
        if self._store.settle(result, batch_token(batch_id)):
            metrics.observe_outcome(result)
            return 1
        return 0
