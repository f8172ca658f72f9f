"""The finalizer: the background task, in every gateway process, that carries batches from
`validating` to their end.

The routes only store a batch and flip its status; all the slow work (parsing the input,
submitting jobs as the tenant's quota allows, counting, cancelling, writing the result files)
happens here. Each second it looks at the active batches and, holding a batch's lock
(`BatchStore.lock`, so of several gateway processes one works on a batch at a time), moves each
on:

    validating   parse the input file (producers/batchfile.py): `failed` with `errors` naming the
                 lines, or `in_progress`
    in_progress  submit the requests not yet submitted, as many as the tenant's quota holds (the
                 rest on later passes, as jobs finish); count the finished jobs (one pipelined
                 status read of those not yet seen final); when all are final: `finalizing`;
                 past `expires_at`: wind down (below) and end `expired`
    finalizing   write the output and error files (purpose `batch_output`): `completed`
    cancelling   wind down, and end `cancelled`

Winding down is what the OpenAI API does with a batch cancelled or expired: the requests not
yet started are cancelled (never called), those in flight finish, and the batch ends once none
runs, its output holding every answer that came, so nothing paid for is thrown away. Each pass
cancels the jobs not running (a running one that comes back to be retried is cancelled then),
and counts those that finish.

Every step reads and writes Redis only, so a restarted gateway (or another one) resumes a batch
where it stood. Jobs are submitted with one idempotency key per request (`batch:ID:CUSTOM_ID`),
so a pass cut short and repeated never enqueues, or pays for, a request twice. Finalizing
reads the job records themselves, not what any client polled, before they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import redis
import structlog
from redis.asyncio.lock import Lock

from tierq.core.errors import BrokerUnavailableError, StoreFullError, TenantQuotaExceededError
from tierq.core.jobcontrol import JobControl
from tierq.core.jobstore import JobStore
from tierq.core.priority import BATCH_PRIORITY
from tierq.core.results import JobResult, JobStatus
from tierq.producers.batchfile import (
    LineError,
    ParsedBatch,
    cancelled_line,
    is_error_line,
    output_line,
    parse_batch_file,
    rejected_line,
)
from tierq.producers.gateway.batch_models import (
    BatchError,
    BatchErrors,
    BatchStatus,
    BatchUsage,
    RequestCounts,
)
from tierq.producers.gateway.batch_store import BatchState, BatchStore
from tierq.producers.gateway.deps import Gateway
from tierq.producers.gateway.file_store import FileStore, FileWriter
from tierq.producers.gateway.storage_errors import NoSuchFileError

log = structlog.get_logger("tierq.gateway")

# How often the finalizer looks at the active batches.
FINALIZER_INTERVAL_SECONDS = 1.0
# Jobs per submit_many call while submitting a batch (the lock is renewed between calls).
SUBMIT_CHUNK = 200
# ... and at most this many bytes of requests (validating and publishing them takes time).
SUBMIT_CHUNK_BYTES = 4 * 1024 * 1024
# Job records per pipelined read while counting and finalizing.
READ_CHUNK = 500
# Batches one gateway process works on at once.
CONCURRENT_BATCHES = 8
# Job cancellations per thread hop (one Redis script each; the lock is renewed between).
CANCEL_CHUNK = 200


class Finalizer:
    """Moves every active batch on, one step per batch at a time (see the module's docstring).

    What it caches (the submitted jobs, the jobs seen final) only saves reads: each step starts
    from what Redis holds, so a cache lost with the process costs nothing. The input is parsed
    once, to validate it; the requests to run then live in Redis (`BatchStore.requests`) and
    are read a chunk at a time, so a gateway's memory does not grow with its active batches.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.store = BatchStore.of(gateway)
        self.files = FileStore.of(gateway)
        # Cancels a batch's jobs but those in flight, which the client's `cancel` would discard.
        self._control = JobControl(
            JobStore.from_settings(gateway.settings, gateway.client.sync_redis)
        )
        self._slots = asyncio.Semaphore(CONCURRENT_BATCHES)
        self._steps: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, tuple[int, dict[str, str]]] = {}  # batch -> (cursor, cid -> job)
        self._final: dict[str, dict[str, bool]] = {}  # batch -> job id -> succeeded

    async def run(self) -> None:
        """Move the batches on each second until cancelled; it then ends cancelled, even when
        the cancellation was lost on its way (see `_stop_if_cancelled`)."""
        while True:
            try:
                await self.tick()
            except Exception as error:  # Redis away: try again next time
                log.warning("batch.finalizer_failed", error=repr(error))
            _stop_if_cancelled()
            await asyncio.sleep(FINALIZER_INTERVAL_SECONDS)

    async def tick(self) -> None:
        """Start a step for each active batch that has none running in this process."""
        active = await self.store.active()
        for batch_id in set(self._jobs) | set(self._final):
            if batch_id not in active and batch_id not in self._steps:
                self._forget(batch_id)  # finished by another gateway process
        for batch_id in active - set(self._steps):
            task = asyncio.create_task(self._step(batch_id))
            self._steps[batch_id] = task
            task.add_done_callback(functools.partial(self._step_done, batch_id))

    def _step_done(self, batch_id: str, _: asyncio.Task[None]) -> None:
        self._steps.pop(batch_id, None)

    async def stop(self) -> None:
        steps = list(self._steps.values())
        for task in steps:
            task.cancel()
        await asyncio.gather(*steps, return_exceptions=True)

    async def _step(self, batch_id: str) -> None:
        async with self._slots:
            lock = self.store.lock(batch_id)
            if not await lock.acquire():
                return
            try:
                await self._advance(batch_id, lock)
            # A lock that lapsed mid-step (another process may hold the batch now) is
            # redis-py's `LockNotOwnedError`, a `RedisError`: the step stops, as on any fault.
            except (redis.RedisError, OSError, BrokerUnavailableError) as error:
                log.warning("batch.step_failed", batch_id=batch_id, error=repr(error))
            except Exception:  # a bug: its traceback, and the next pass tries again
                log.exception("batch.step_failed", batch_id=batch_id)
            finally:
                # Freed only if still ours; one that lapsed, or a Redis away, just expires.
                with contextlib.suppress(redis.RedisError, OSError):
                    await lock.release()

    async def _advance(self, batch_id: str, lock: Lock) -> None:
        # One pass may take a batch through several statuses (validating -> in_progress -> ...).
        for _ in range(4):
            _stop_if_cancelled()
            state = await self.store.load(batch_id)
            if state is None or state.batch.status.is_final:
                await self.store.discard(batch_id)
                self._forget(batch_id)
                return
            status = state.batch.status
            if status is BatchStatus.VALIDATING:
                await self._validate(state)
            elif status is BatchStatus.IN_PROGRESS:
                if not await self._progress(state, lock):
                    return
            elif status is BatchStatus.FINALIZING:
                await self._close(state, lock, BatchStatus.COMPLETED, "batch_cancelled")
            elif not await self._wind_down(state, lock, BatchStatus.CANCELLED, "batch_cancelled"):
                return

    async def _validate(self, state: BatchState) -> None:
        batch = state.batch
        parsed = await self._parse(state)
        if parsed is None:
            message = f"The input file {batch.input_file_id!r} no longer exists."
            parsed = ParsedBatch(errors=[LineError("file_not_found", message)])
        now = int(time.time())
        if parsed.errors:
            errors = BatchErrors(data=[BatchError(**e.to_dict()) for e in parsed.errors])
            failed = batch.model_copy(
                update={"status": BatchStatus.FAILED, "failed_at": now, "errors": errors}
            )
            if await self.store.transition(failed, BatchStatus.VALIDATING):
                log.info("batch.failed", batch_id=batch.id, errors=len(parsed.errors))
            return
        rejected = {r.custom_id: json.dumps(rejected_line(r)) for r in parsed.rejected}
        await self.store.record_validation(batch.id, parsed.requests, rejected)
        counts = RequestCounts(total=parsed.total, failed=len(parsed.rejected))
        started = batch.model_copy(
            update={
                "status": BatchStatus.IN_PROGRESS,
                "in_progress_at": now,
                "request_counts": counts,
                "model": parsed.model,
            }
        )
        if await self.store.transition(started, BatchStatus.VALIDATING):
            log.info(
                "batch.validated", batch_id=batch.id, requests=counts.total, rejected=counts.failed
            )

    async def _parse(self, state: BatchState) -> ParsedBatch | None:
        """The batch's input file, parsed; None if the file is gone."""
        try:
            _, data = await self.files.content(state.tenant, state.batch.input_file_id)
        except NoSuchFileError:
            return None
        return await asyncio.to_thread(parse_batch_file, data, self.gateway.settings)

    async def _progress(self, state: BatchState, lock: Lock) -> bool:
        """Submit, count, and move to finalizing when every job is final; True if it moved."""
        batch = state.batch
        if batch.expires_at is not None and time.time() >= batch.expires_at:
            return await self._wind_down(state, lock, BatchStatus.EXPIRED, "batch_expired")
        await self._submit(state, lock)
        jobs = await self._submitted(state)
        succeeded, failed = await self._tally(batch.id, jobs)
        counts = _request_counts(state, succeeded, failed)
        if state.cursor >= state.valid and succeeded + failed == len(jobs):
            finalizing = batch.model_copy(
                update={
                    "status": BatchStatus.FINALIZING,
                    "finalizing_at": int(time.time()),
                    "request_counts": counts,
                }
            )
            return await self.store.transition(finalizing, BatchStatus.IN_PROGRESS)
        await self._show(state, counts)
        return False

    async def _show(self, state: BatchState, counts: RequestCounts) -> None:
        """Store new counts in the batch, if it has not changed status meanwhile."""
        if counts != state.batch.request_counts:
            updated = state.batch.model_copy(update={"request_counts": counts})
            await self.store.transition(updated, state.batch.status)

    async def _wind_down(
        self, state: BatchState, lock: Lock, end: BatchStatus, cancelled_code: str
    ) -> bool:
        """Cancel the jobs not running; once none runs, end the batch `end`. True if it ended.

        The jobs in flight finish into the output (their calls are paid for); until they do,
        the batch stays as it is (`cancelling`, or `in_progress` past its window) and its
        counts follow them.
        """
        jobs = await self._submitted(state)
        if await self._cancel_jobs(state.batch.id, jobs, lock):
            succeeded, failed = await self._tally(state.batch.id, jobs)
            await self._show(state, _request_counts(state, succeeded, failed))
            return False
        await self._close(state, lock, end, cancelled_code)
        return True

    async def _submit(self, state: BatchState, lock: Lock) -> None:
        """Submit what the tenant's quota holds of the requests not yet submitted."""
        if state.cursor >= state.valid:
            return
        batch_id, tenant = state.batch.id, state.tenant
        quota, client = self.gateway.quota, self.gateway.client
        while state.cursor < state.valid:
            if await self.store.status(batch_id) is not BatchStatus.IN_PROGRESS:
                return  # cancelled meanwhile: the next pass closes it
            size = min(SUBMIT_CHUNK, state.valid - state.cursor)
            try:
                # As many as the quota has room for; a chunk's unused slots are given back.
                reservation = await quota.reserve(tenant, size, partial=True)
            except TenantQuotaExceededError:
                return  # the rest goes in as the tenant's jobs finish
            async with reservation:
                chunk = await self.store.requests(
                    batch_id, state.cursor, reservation.slots, SUBMIT_CHUNK_BYTES
                )
                if not chunk:
                    if await self._restore_requests(state):
                        continue
                    # Neither the stored requests nor the input are left: what was not
                    # submitted cannot be, and the batch ends with what was.
                    await lock.reacquire()
                    log.warning(
                        "batch.requests_lost",
                        batch_id=batch_id,
                        unsubmitted=state.valid - state.cursor,
                    )
                    await self.store.give_up_unsubmitted(batch_id, state.cursor)
                    state.valid = state.cursor
                    return
                # A fresh lock for each chunk, before it is paid for: a chunk is small enough
                # (by count and by bytes) to be submitted well within LOCK_SECONDS, so no other
                # gateway can take the batch over while it is on its way.
                await _renew(lock)
                keys = [f"batch:{batch_id}:{r.custom_id}" for r in chunk]
                deadline = _batch_deadline(state)
                try:
                    # Batches run as bulk: a tier with fair dispatch serves interactive
                    # work first, and the batch at its share (tierq/core/dispatch.py). Their
                    # deadline is the batch's end (its completion window): with time to spare
                    # they run at flex where the model offers it (tierq/core/spend.py).
                    job_ids = await client.submit_many(
                        [r.request for r in chunk],
                        keys,
                        tenant=tenant,
                        priority=BATCH_PRIORITY,
                        deadline=deadline,
                        provider_batch=deadline is not None
                        and self.gateway.settings.gateway.batches_via_provider,
                    )
                except StoreFullError as full:
                    # Redis nearly full: nothing was enqueued, and the batch waits (it does
                    # not fail) until the queued jobs have drained; the next pass tries again.
                    log.warning("batch.waiting_for_memory", batch_id=batch_id, reason=str(full))
                    return
                await reservation.fill(job_ids)
            state.cursor += len(chunk)
            submitted = {r.custom_id: job_id for r, job_id in zip(chunk, job_ids, strict=True)}
            await self.store.record_jobs(batch_id, submitted, state.cursor)
            _, known = self._jobs.get(batch_id, (0, {}))
            self._jobs[batch_id] = (state.cursor, {**known, **submitted})
            log.info("batch.submitted", batch_id=batch_id, jobs=len(chunk), cursor=state.cursor)

    async def _restore_requests(self, state: BatchState) -> bool:
        """Store a running batch's requests again from its input file, when they are missing:
        a batch validated before requests were stored, or one whose list expired while every
        gateway was away. False when the input is gone, or no longer validates the same."""
        if await self.store.has_requests(state.batch.id):
            return False
        parsed = await self._parse(state)
        if parsed is None or parsed.errors or len(parsed.requests) != state.valid:
            return False
        await self.store.keep_requests(state.batch.id, parsed.requests)
        log.info("batch.requests_restored", batch_id=state.batch.id, requests=state.valid)
        return True

    async def _submitted(self, state: BatchState) -> dict[str, str]:
        """Job id by custom id of the submitted requests (read again when another process
        submitted more since)."""
        cursor, jobs = self._jobs.get(state.batch.id, (-1, {}))
        if cursor != state.cursor:
            jobs = await self.store.jobs(state.batch.id)
            self._jobs[state.batch.id] = (state.cursor, jobs)
        return jobs

    async def _tally(self, batch_id: str, jobs: dict[str, str]) -> tuple[int, int]:
        """(succeeded, failed or cancelled) among `jobs`; reads only those not yet seen final."""
        final = self._final.setdefault(batch_id, {})
        pending = [job_id for job_id in jobs.values() if job_id not in final]
        for start in range(0, len(pending), READ_CHUNK):
            chunk = pending[start : start + READ_CHUNK]
            for job_id, status in zip(
                chunk, await self.gateway.client.statuses(chunk), strict=True
            ):
                if status is None:  # the record expired or vanished: it will not succeed now
                    final[job_id] = False
                elif status.is_final:
                    final[job_id] = status is JobStatus.SUCCEEDED
        succeeded = sum(1 for job_id in jobs.values() if final.get(job_id) is True)
        failed = sum(1 for job_id in jobs.values() if final.get(job_id) is False)
        return succeeded, failed

    async def _cancel_jobs(self, batch_id: str, jobs: dict[str, str], lock: Lock) -> int:
        """Cancel the jobs not yet final but those running: queued (or waiting to be retried)
        ones never run again, running ones finish. Returns how many are still running."""
        await self._tally(batch_id, jobs)  # one pipelined read spares cancelling finished ones
        final = self._final.get(batch_id, {})
        unfinished = [job_id for job_id in jobs.values() if job_id not in final]
        running = 0
        for start in range(0, len(unfinished), CANCEL_CHUNK):
            records = await self.gateway.client.get_many(unfinished[start : start + CANCEL_CHUNK])
            outcomes = await asyncio.to_thread(self._cancel_unless_running, records)
            running += outcomes.count("running")
            await _renew(lock)
        return running

    def _cancel_unless_running(self, records: Sequence[JobResult | None]) -> list[str]:
        """Each job's outcome (`JobControl.cancel`); a blocking call, made in a thread."""
        return [
            self._control.cancel(record, spare_running=True)[0]
            for record in records
            if record is not None and not record.status.is_final
        ]

    async def _records(
        self, jobs: dict[str, str], lock: Lock
    ) -> AsyncIterator[list[tuple[str, JobResult | None]]]:
        """The jobs' records by custom id, READ_CHUNK at a time (never all of them at once)."""
        items = list(jobs.items())
        for start in range(0, len(items), READ_CHUNK):
            chunk = items[start : start + READ_CHUNK]
            found = await self.gateway.client.get_many([job_id for _, job_id in chunk])
            yield list(zip([cid for cid, _ in chunk], found, strict=True))
            await _renew(lock)

    async def _close(
        self, state: BatchState, lock: Lock, end: BatchStatus, cancelled_code: str
    ) -> None:
        """Write the output and error files and end the batch `end` (completed after all jobs
        finished; cancelled or expired once the wind-down left none running).

        Lines are rendered and written a chunk of records at a time, so neither the records
        nor the files are ever held whole.
        """
        batch = state.batch
        jobs = await self._submitted(state)
        files = _ResultFiles(self.files, state)
        usage = BatchUsage()
        async for chunk in self._records(jobs, lock):
            lines = []
            for custom_id, record in chunk:
                if record is None:
                    reason = "The job's record expired before the batch was finalized."
                    lines.append(cancelled_line(custom_id, "job_expired", reason))
                elif not record.status.is_final:
                    lines.append(cancelled_line(custom_id, cancelled_code))
                else:
                    lines.append(output_line(custom_id, record, cancelled_code=cancelled_code))
                    if record.status is JobStatus.SUCCEEDED and record.usage is not None:
                        usage.add(record.usage)
            await files.add(lines)
        await files.add(
            [json.loads(line) for line in (await self.store.rejected(batch.id)).values()]
        )
        if state.cursor < state.valid:  # never submitted: cancelled or expired first
            await self._restore_requests(state)
            async for custom_ids in self.store.custom_ids(batch.id, state.cursor):
                await files.add([cancelled_line(cid, cancelled_code) for cid in custom_ids])
        output_file_id, error_file_id = await files.close()
        now = int(time.time())
        timestamp = {
            BatchStatus.COMPLETED: "completed_at",
            BatchStatus.CANCELLED: "cancelled_at",
            BatchStatus.EXPIRED: "expired_at",
        }[end]
        ended = batch.model_copy(
            update={
                "status": end,
                timestamp: now,
                "output_file_id": output_file_id,
                "error_file_id": error_file_id,
                "request_counts": RequestCounts(
                    total=max(batch.request_counts.total, files.outputs + files.errors),
                    completed=files.outputs,
                    failed=files.errors,
                ),
                "usage": usage,
            }
        )
        if not await self.store.transition(ended, batch.status):
            # It changed meanwhile (a cancel while expiring): the next pass ends it, with
            # files of its own; these would only be listed for nothing.
            for file_id in (output_file_id, error_file_id):
                if file_id is not None:
                    await self.files.delete(state.tenant, file_id)
            return
        await self.store.finish(batch.id)
        self._forget(batch.id)
        log.info(
            "batch.finished",
            batch_id=batch.id,
            status=end.value,
            completed=files.outputs,
            failed=files.errors,
            total_tokens=usage.total_tokens,
        )

    def _forget(self, batch_id: str) -> None:
        self._jobs.pop(batch_id, None)
        self._final.pop(batch_id, None)


def _request_counts(state: BatchState, succeeded: int, failed: int) -> RequestCounts:
    """A running batch's counts: its jobs that finished, and the requests it never ran
    (rejected while validating, or lost before they were submitted) as failed."""
    total = state.batch.request_counts.total
    return RequestCounts(total=total, completed=succeeded, failed=failed + total - state.valid)


def _stop_if_cancelled() -> None:
    """Raise `CancelledError` if this task was asked to stop, even if the request was lost.

    On Python 3.11, `asyncio.wait_for` (which redis-py uses to send each command within its
    socket timeout) drops a cancellation that lands as the command is sent
    (python/cpython#86296, fixed in 3.12): the task is marked cancelling, yet runs on. The
    finalizer's loop then slept forever between passes, and a stopping gateway (SIGTERM,
    Ctrl-C, a port it could not bind) waited for it forever. `Task.cancelling()` still counts
    the request, so checking it once per pass and per chunk honours it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _renew(lock: Lock) -> None:
    """Renew a batch's lock between chunks of work: also where a stopping step ends."""
    _stop_if_cancelled()
    await lock.reacquire()


def _jsonl(lines: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()


class _ResultFiles:
    """A batch's output and error files, written as lines come; each is created by its first
    line, so a batch with no errors has no error file (`error_file_id` null, as in the API)."""

    def __init__(self, files: FileStore, state: BatchState) -> None:
        self._files = files
        self._state = state
        self._writers: dict[str, FileWriter] = {}
        self.outputs = 0
        self.errors = 0

    async def add(self, lines: Sequence[dict[str, Any]]) -> None:
        outputs = [line for line in lines if not is_error_line(line)]
        errors = [line for line in lines if is_error_line(line)]
        self.outputs += len(outputs)
        self.errors += len(errors)
        for kind, chosen in (("output", outputs), ("error", errors)):
            if chosen:
                await self._writer(kind).write(await asyncio.to_thread(_jsonl, chosen))

    async def close(self) -> tuple[str | None, str | None]:
        """The output and error files' ids (None for a file with no lines)."""
        ids = {kind: (await writer.close()).id for kind, writer in self._writers.items()}
        return ids.get("output"), ids.get("error")

    def _writer(self, kind: str) -> FileWriter:
        if kind not in self._writers:
            self._writers[kind] = self._files.writer(
                self._state.tenant,
                filename=f"{self._state.batch.id}_{kind}.jsonl",
                purpose="batch_output",
                ttl_seconds=self._state.output_ttl,
            )
        return self._writers[kind]


@asynccontextmanager
async def finalizer(gateway: Gateway) -> AsyncIterator[None]:
    """The background task that moves batches on while the gateway runs; on the way out it
    stops mid-step if it must (the next process resumes from Redis)."""
    runner = Finalizer(gateway)
    task = asyncio.create_task(runner.run(), name="tierq.batch-finalizer")
    try:
        yield
    finally:
        task.cancel()
        # Waits for it to end; unlike `suppress(CancelledError)` around `await task`, never
        # swallows a cancellation of this coroutine itself.
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()


def _batch_deadline(state: BatchState) -> datetime | None:
    """The batch's end as its jobs' deadline; None within a minute of it (they run as always,
    and a deadline cannot pass on the way to the submission)."""
    expires_at = state.batch.expires_at
    if expires_at is None or expires_at <= time.time() + 60:
        return None
    return datetime.fromtimestamp(expires_at, UTC)
