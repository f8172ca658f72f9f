"""Per-tenant storage quota on uploaded files: how many a tenant keeps, and their bytes.

One tenant must not fill the Redis every tenant shares. Each tenant's uploads (purpose `batch`;
the batch output files the gateway writes do not count) are counted in two keys: a sorted set
of file id -> when the file expires (`Keys.tenant_uploads`) and a hash of file id -> bytes with
their `total` (`Keys.tenant_upload_bytes`). Files expire by TTL without any hook, so the
reservation script (`storage_reserve.lua`) drops the entries whose time has passed before it
counts: each entry is dropped once, an amortised cost, and no tenant's files are ever scanned.
Checking and adding are one script, so concurrent uploads cannot pass the quota together.

An upload is counted from its first byte: `UploadAllowance.open` reserves the file (refused at
once when the tenant keeps `TIERQ_GATEWAY__TENANT_MAX_FILES` files), then `grow` reserves its
bytes as they arrive, refusing as soon as they would pass `TIERQ_GATEWAY__TENANT_MAX_FILE_BYTES`.
While an upload is under way its entry lives as long as its unpublished parts would; `settle`
gives it the file's own lifetime just before the file is published. Deleting a file releases it
(`StorageQuota.release`, from `FileStore.delete`); a batch extending its input file's life keeps
it counted as long (`StorageQuota.keep`).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio

from tierq.core import scripts
from tierq.core.errors import StorageQuotaExceededError
from tierq.core.keys import Keys

FILES_SETTING = "TIERQ_GATEWAY__TENANT_MAX_FILES"
BYTES_SETTING = "TIERQ_GATEWAY__TENANT_MAX_FILE_BYTES"


@dataclass(frozen=True, slots=True)
class StorageLimits:
    """What one tenant may keep: files, and their bytes."""

    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """A tenant's counted files and bytes, as a reservation left them (or found them, refused)."""

    files: int
    bytes: int


class StorageQuota:
    """The accounting of every tenant's uploads, in Redis."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, *, horizon_seconds: int) -> None:
        self._redis = client
        self._keys = keys
        # How long the accounting keys outlive their last change: no file lives longer.
        self._horizon_seconds = horizon_seconds
        self._reserve = scripts.register(client, "storage_reserve")
        self._release = scripts.register(client, "storage_release")
        self._keep = scripts.register(client, "storage_keep")

    def _names(self, tenant: str) -> list[str]:
        return [self._keys.tenant_uploads(tenant), self._keys.tenant_upload_bytes(tenant)]

    async def reserve(
        self,
        tenant: str,
        file_id: str,
        added_bytes: int,
        *,
        lives_seconds: int,
        limits: StorageLimits,
    ) -> StorageUsage:
        """Count `file_id` (if new) and `added_bytes` more of it, living `lives_seconds` from
        now; `StorageQuotaExceededError` if that would pass `limits` (nothing is counted)."""
        reply = await self._reserve(
            keys=self._names(tenant),
            args=[
                file_id,
                added_bytes,
                lives_seconds,
                limits.files,
                limits.bytes,
                self._horizon_seconds,
            ],
        )
        if int(reply[0]) == 1:
            return StorageUsage(int(reply[1]), int(reply[2]))
        what = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        files, used_bytes = int(reply[2]), int(reply[3])
        if what == "files":
            raise StorageQuotaExceededError(tenant, "files", files, limits.files, FILES_SETTING)
        raise StorageQuotaExceededError(tenant, "bytes", used_bytes, limits.bytes, BYTES_SETTING)

    async def release(self, tenant: str, file_id: str) -> int:
        """Stop counting the file; the bytes it held (0 if it was not counted)."""
        return int(await self._release(keys=self._names(tenant), args=[file_id]))

    async def keep(self, tenant: str, file_id: str, seconds: int) -> None:
        """Keep a counted file counted for at least `seconds` more (no-op for one not counted)."""
        await self._keep(keys=self._names(tenant), args=[file_id, seconds, self._horizon_seconds])

    async def usage(self, tenant: str) -> StorageUsage:
        """The tenant's counted files and bytes, expired entries not yet dropped included."""
        uploads, sizes = self._names(tenant)
        files = int(await self._redis.zcard(uploads))
        total = await self._redis.hget(sizes, "total")
        return StorageUsage(files, int(total or 0))


class UploadAllowance:
    """What one upload holds of its tenant's quota, grown as its bytes arrive.

    Bytes are reserved a step at a time (a file part), not per chunk, so a large upload costs
    a script call per part; between steps the upload knows its tenant's headroom from the last
    reply, and reserves at once when the bytes it holds unreserved pass it, which is where a
    refusal is due. Another upload of the same tenant may take that headroom meanwhile; the
    next reservation sees it, before the next part is written.
    """

    def __init__(
        self,
        quota: StorageQuota,
        tenant: str,
        file_id: str,
        *,
        limits: StorageLimits,
        step_bytes: int,
        holding_seconds: int,
    ) -> None:
        self._quota = quota
        self.tenant = tenant
        self.file_id = file_id
        self._limits = limits
        self._step_bytes = step_bytes
        # While under way the entry lives as long as the upload's unpublished parts do.
        self._holding_seconds = holding_seconds
        self._pending = 0
        self._headroom = 0
        self.reserved_bytes = 0
        self._held = False

    async def open(self) -> None:
        """Count the file before any of its bytes is read; `StorageQuotaExceededError` if the
        tenant keeps as many files as it may, or all the bytes."""
        await self._reserve(0, self._holding_seconds)

    async def grow(self, added_bytes: int) -> None:
        """`added_bytes` more arrived; `StorageQuotaExceededError` once they pass the quota."""
        self._pending += added_bytes
        if self._pending >= self._step_bytes or self._pending > self._headroom:
            await self._reserve(self._pending, self._holding_seconds)

    async def settle(self, lives_seconds: int) -> None:
        """Reserve what is left and give the entry the file's own lifetime (before publishing)."""
        await self._reserve(self._pending, lives_seconds)

    async def release(self) -> None:
        """Give back everything (an upload refused, failed or abandoned)."""
        if self._held:
            await self._quota.release(self.tenant, self.file_id)
            self._held = False

    async def _reserve(self, added_bytes: int, lives_seconds: int) -> None:
        usage = await self._quota.reserve(
            self.tenant,
            self.file_id,
            added_bytes,
            lives_seconds=lives_seconds,
            limits=self._limits,
        )
        self._held = True
        self.reserved_bytes += added_bytes
        self._pending -= added_bytes
        self._headroom = self._limits.bytes - usage.bytes
