"""Gateway API keys: random bearer tokens, each bound to one tenant, stored only as hashes.

A key is `tq-` and 43 URL-safe characters from `secrets` (256 bits). Redis keeps its SHA-256,
never the key, so a copy of Redis does not let anyone in. A fast hash is the right one here,
as for GitHub's and Stripe's tokens: slow password hashes (bcrypt, argon2) protect guessable
secrets, and a 256-bit random key cannot be guessed; a slow hash would only add milliseconds
to every request. Checking a key is one GET, so a revocation holds from the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import redis.asyncio
from pydantic import BaseModel

from tierq.core.contract import TENANT_PATTERN
from tierq.core.errors import TierqError
from tierq.core.keys import Keys, as_text

KEY_PREFIX = "tq-"


class UnknownKeyError(TierqError, LookupError):
    """Raised when a key id names no key; `tierq keys list` shows the ids."""


class InvalidTenantError(TierqError, ValueError):
    """Raised for a tenant name outside [A-Za-z0-9_.-], 1 to 64 characters."""


class ApiKey(BaseModel):
    """What is kept of a key: never the key itself."""

    key_id: str
    tenant: str
    created_at: datetime
    revoked_at: datetime | None = None
    # The key's first characters, so an operator can tell keys apart in `tierq keys list`.
    hint: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    async def create(self, tenant: str) -> tuple[str, ApiKey]:
        """A new key for `tenant`; the key is returned once, here, and stored only hashed."""
        if not TENANT_PATTERN.match(tenant):
            raise InvalidTenantError(
                f"tenant {tenant!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . - "
                "(starting with a letter or digit)"
            )
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            key_id="key_" + secrets.token_hex(8),
            tenant=tenant,
            created_at=datetime.now(UTC),
            hint=secret[:7],
        )
        digest = hash_key(secret)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.api_key(digest), record.model_dump_json())
            pipe.hset(self._keys.api_keys, record.key_id, digest)
            await pipe.execute()
        return secret, record

    async def list(self, tenant: str | None = None) -> list[ApiKey]:
        digests = await self._redis.hgetall(self._keys.api_keys)
        if not digests:
            return []
        raws = await self._redis.mget([self._keys.api_key(as_text(d)) for d in digests.values()])
        found = [ApiKey.model_validate_json(raw) for raw in raws if raw is not None]
        return sorted(
            (k for k in found if tenant is None or k.tenant == tenant),
            key=lambda k: k.created_at,
        )

    async def revoke(self, key_id: str) -> ApiKey:
        """Refuse the key from the next request on; its record stays, for the audit trail."""
        digest = await self._redis.hget(self._keys.api_keys, key_id)
        raw = await self._redis.get(self._keys.api_key(as_text(digest))) if digest else None
        if digest is None or raw is None:
            raise UnknownKeyError(f"no API key with id {key_id!r} (see `tierq keys list`)")
        record = ApiKey.model_validate_json(raw)
        if record.active:
            record = record.model_copy(update={"revoked_at": datetime.now(UTC)})
            await self._redis.set(self._keys.api_key(as_text(digest)), record.model_dump_json())
        return record

    async def authenticate(self, secret: str) -> ApiKey | None:
        """The key's record if it is a live key, else None (unknown and revoked alike)."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 128:
            return None
        raw = await self._redis.get(self._keys.api_key(hash_key(secret)))
        if raw is None:
            return None
        record = ApiKey.model_validate_json(raw)
        return record if record.active else None
