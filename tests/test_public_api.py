"""What `tierq` exports is what docs/jobs.md promises: the clients and every error a caller sees.

Pure reading of the page and of the package; no Redis.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import tierq
from tierq.core import errors

JOBS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "jobs.md"
_ERRORS_SECTION = re.compile(r"^## Errors a caller sees$(.*?)^## ", re.MULTILINE | re.DOTALL)
_ERROR_NAME = re.compile(r"`(\w+(?:Error|Timeout))`")


def errors_the_page_names() -> set[str]:
    """Every error class of tierq's named in the page's "Errors a caller sees" section (not
    the built-in bases it mentions, `ValueError`, `TimeoutError`)."""
    section = _ERRORS_SECTION.search(JOBS_PAGE.read_text(encoding="utf-8"))
    assert section is not None, "docs/jobs.md has no 'Errors a caller sees' section"
    return {name for name in _ERROR_NAME.findall(section[1]) if not hasattr(builtins, name)}


def test_every_error_the_jobs_page_names_is_importable_from_tierq() -> None:
    named = errors_the_page_names()
    # (the reading finds the names: the one the issue was about among them)
    assert {"IdempotencyConflictError", "JobWaitTimeout", "TierqError"} <= named

    for name in sorted(named):
        assert name in tierq.__all__, f"docs/jobs.md names {name}, tierq does not export it"
        exported = getattr(tierq, name)
        assert exported is getattr(errors, name)
        assert issubclass(exported, errors.TierqError)


def test_a_star_import_gives_every_name_tierq_lists() -> None:
    namespace: dict[str, object] = {}

    exec("from tierq import *", namespace)  # noqa: S102 - the import an app would write

    assert set(tierq.__all__) <= set(namespace)
    assert set(tierq.__all__) <= set(dir(tierq))
