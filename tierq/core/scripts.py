"""Every Lua script tierq runs in Redis, read once from `tierq/core/lua/*.lua` and registered
by name.

Each script is a file of its own (`claim.lua`, `ratelimit_acquire.lua`, ...), as in
dramatiq's Redis broker: it reads and diffs as Lua, and its header comment says its KEYS, ARGV
and reply. Code asks for a script by its file's name, `register(client, "claim")`, and gets
redis-py's `Script` (or `AsyncScript` for an asyncio client): it runs by EVALSHA, loads the
script again if Redis lost it (a restart), and can be queued in a pipeline.

Preludes are the code several scripts share, written once. A file whose name starts with `_`
is a prelude, not a script: a script's line `-- include: now` is replaced by the text of
`_now.lua` (Redis's clock as `now`) when the scripts are read. Preludes include nothing
themselves. Text is spliced because a script cannot load another: Redis runs each in a
sandbox without `require`, and server-side functions (`FUNCTION LOAD`) would have to be
installed on every server before any client could run.

The files are package data (pyproject.toml's `[tool.setuptools.package-data]`), read through
`importlib.resources`, so an installed wheel finds them as a source checkout does.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import overload

import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script

# A script's line that splices a prelude in: `-- include: now` for `_now.lua`.
_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)
_PRELUDE_MARK = "_"
_SUFFIX = ".lua"


@functools.cache
def sources() -> dict[str, str]:
    """Every script's text by name (its file's name without `.lua`), preludes spliced in."""
    folder = resources.files("tierq.core") / "lua"
    texts = {
        entry.name.removesuffix(_SUFFIX): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(_SUFFIX)
    }
    preludes = {
        name.removeprefix(_PRELUDE_MARK): text
        for name, text in texts.items()
        if name.startswith(_PRELUDE_MARK)
    }

    def splice(name: str, match: re.Match[str]) -> str:
        if match[1] not in preludes:
            raise LookupError(f"{name}{_SUFFIX} includes {match[1]!r}: no _{match[1]}{_SUFFIX}")
        return preludes[match[1]].rstrip("\n")

    return {
        name: _INCLUDE.sub(functools.partial(splice, name), text)
        for name, text in texts.items()
        if not name.startswith(_PRELUDE_MARK)
    }


def source(name: str) -> str:
    """One script's text, preludes spliced in; a `LookupError` names the scripts there are."""
    known = sources()
    if name not in known:
        raise LookupError(f"no Lua script {name!r}; there are {', '.join(sorted(known))}")
    return known[name]


@overload
def register(client: redis.asyncio.Redis, name: str) -> AsyncScript: ...
@overload
def register(client: redis.Redis, name: str) -> Script: ...
def register(client: redis.Redis | redis.asyncio.Redis, name: str) -> Script | AsyncScript:
    """The script `name` bound to `client`; registering costs no round trip (redis-py loads
    it on first use)."""
    return client.register_script(source(name))
