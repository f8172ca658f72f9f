"""Redis names and Lua scripts each live in one place: keys in tierq/core/keys.py, scripts in
tierq/core/lua/*.lua (read by tierq/core/scripts.py).

The key check reads the code's syntax trees and flags a name built from the key prefix (an
f-string, a `+` or a `%` with `key_prefix`, or with a `prefix` attribute such as the old
limiter's `self._prefix`) or one extended from a `Keys` name (`f"{keys.batch(id)}:lock"`). A
key first copied to a local variable and then extended escapes it; review catches that one.
Before trusting a clean answer, the first test shows the check flagging such spellings.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import redis

from tierq.core import scripts
from tierq.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The code that talks to Redis: the shared core, the two sides, and the benchmarks.
CODE_FOLDERS = ("tierq", "worker", "producers", "benchmarks")
KEYS_MODULE = ROOT / "tierq" / "core" / "keys.py"
# A literal that starts with the default key prefix and goes on is a key spelled by hand
# ("tierq:job:"); "tierq: ..." with a space is prose (a docstring), "tierq:" alone the default.
_LITERAL_KEY = re.compile("^" + re.escape(str(Settings.model_fields["key_prefix"].default)) + r"\S")
SCRIPTS_MODULE = ROOT / "tierq" / "core" / "scripts.py"
LUA_FOLDER = ROOT / "tierq" / "core" / "lua"

# Identifiers that hold the key prefix, and attributes that do (`keys.prefix`, `self._prefix`).
_PREFIX_NAMES = {"key_prefix", "_key_prefix"}
_PREFIX_ATTRIBUTES = _PREFIX_NAMES | {"prefix", "_prefix"}
# What a `Keys` instance is called wherever one is held.
_KEYS_HOLDERS = {"keys", "_keys"}


def _is_prefix(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _PREFIX_NAMES
    return isinstance(node, ast.Attribute) and node.attr in _PREFIX_ATTRIBUTES


def _is_keys(node: ast.expr) -> bool:
    """A `Keys` value: `keys`, `self.keys`, `store._keys`, `Keys(...)`."""
    if isinstance(node, ast.Name):
        return node.id in _KEYS_HOLDERS
    if isinstance(node, ast.Attribute):
        return node.attr in _KEYS_HOLDERS
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Keys"


def _is_key_name(node: ast.expr) -> bool:
    """A name read from the prefix or from `Keys` (`keys.watch`, `keys.batch(id)`)."""
    if _is_prefix(node):
        return True
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Attribute) and _is_keys(node.value)


def key_spellings(source: str) -> list[int]:
    """The lines on which `source` builds a Redis name outside `Keys`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            parts = [part.value for part in node.values if isinstance(part, ast.FormattedValue)]
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
            parts = [node.left, node.right]
        else:
            continue
        if any(_is_key_name(part) for part in parts):
            found.append(node.lineno)
    for node in ast.walk(ast.parse(source)):
        literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if literal and _LITERAL_KEY.match(node.value) and node.lineno not in found:
            found.append(node.lineno)
    return found


def python_files(*folders: str) -> list[Path]:
    return sorted(
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_the_key_check_flags_names_built_outside_keys_py() -> None:
    # Given spellings the check must catch (each was in tierq's code once), and fine code
    spelled = [
        'def k(settings, job_id):\n    return f"{settings.key_prefix}job:{job_id}"',
        'class L:\n    def k(self, group):\n        return f"{self._prefix}{group}:usage:"',
        'def k(keys, batch_id):\n    return f"{keys.batch(batch_id)}:lock"',
        'def k(self, batch_id):\n    return self.keys.batch(batch_id) + ":building"',
        'def k(settings):\n    return Keys(settings.key_prefix).watch + ":x"',
        'def k(key_prefix):\n    return key_prefix + "done:*"',
        'def k(r, job_id):\n    return r.hget("tierq:job:" + job_id, "status")',
        'def k(job_id):\n    return f"tierq:job:{job_id}"',
    ]
    fine = [
        "def k(keys, job_id):\n    return keys.job(job_id)",
        'def k(prefix):\n    return f"`{prefix}*`"',  # not the key prefix: an env prefix
        'def k(tier, queue_prefix):\n    return f"{queue_prefix}{tier}"',  # Celery's queue
        'def k(cid):\n    return f"batch:{cid}"',  # an idempotency key's value, not a Redis key
        'def cli():\n    """tierq: jobs."""',  # prose that starts with the prefix
    ]

    # Then the check flags each spelling, on its line (the last), and nothing in the fine code
    on_last_line = [[len(source.splitlines())] for source in spelled]
    assert [key_spellings(source) for source in spelled] == on_last_line
    assert [key_spellings(source) for source in fine] == [[]] * len(fine)


def test_no_module_but_keys_py_spells_a_redis_key() -> None:
    spelled = {
        str(path.relative_to(ROOT)): lines
        # The tests too, but for this one, whose examples spell keys on purpose.
        for path in python_files(*CODE_FOLDERS, "tests")
        if path not in (KEYS_MODULE, Path(__file__).resolve())
        and (lines := key_spellings(path.read_text(encoding="utf-8")))
    }

    assert spelled == {}, "name these keys in tierq/core/keys.py and call Keys"


def test_no_python_module_holds_lua_source() -> None:
    # Lua calls Redis as `redis.call(...)` or `redis.pcall(...)`; Python never does
    lua_call = re.compile(r"redis\.p?call\(")
    assert lua_call.search("local t = redis.call('TIME')")
    holders = [
        str(path.relative_to(ROOT))
        for path in python_files(*CODE_FOLDERS, "simulator", "ops")
        if lua_call.search(path.read_text(encoding="utf-8"))
    ]
    # And only the scripts module registers scripts
    registering = [
        str(path.relative_to(ROOT))
        for path in python_files(*CODE_FOLDERS)
        if "register_script(" in path.read_text(encoding="utf-8") and path != SCRIPTS_MODULE
    ]

    assert holders == [], "move the script to tierq/core/lua/<name>.lua"
    assert registering == [], "register scripts with tierq.core.scripts.register(client, name)"


def registered_names() -> set[str]:
    """The names passed to `scripts.register(client, "<name>")` anywhere in the code."""
    names = set()
    for path in python_files(*CODE_FOLDERS):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "scripts"
                and len(node.args) == 2
                and isinstance(node.args[1], ast.Constant)
            ):
                names.add(str(node.args[1].value))
    return names


def test_every_lua_script_is_read_and_registered_by_its_name() -> None:
    files = {path.stem for path in LUA_FOLDER.glob("*.lua")}
    preludes = {name for name in files if name.startswith("_")}

    assert set(scripts.sources()) == files - preludes
    assert registered_names() == files - preludes, "a script no code runs, or a name misspelled"
    # Every prelude is spliced into some script, and no directive is left unspliced
    for prelude in preludes:
        text = (LUA_FOLDER / f"{prelude}.lua").read_text(encoding="utf-8")
        assert any(text in source for source in scripts.sources().values()), prelude
    directive = re.compile(r"^-- include:", re.MULTILINE)
    assert not any(directive.search(source) for source in scripts.sources().values())


def test_an_unknown_script_name_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(LookupError, match="claim"):
        scripts.source("clam")


def test_every_lua_script_compiles_in_redis(redis_client: redis.Redis) -> None:
    # SCRIPT LOAD compiles a script without running it: a syntax error is refused here
    with pytest.raises(redis.ResponseError):
        redis_client.script_load("return {")
    for name, source in scripts.sources().items():
        sha = redis_client.script_load(source)
        assert redis_client.script_exists(sha) == [True], name
