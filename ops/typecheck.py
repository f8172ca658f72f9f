"""Run mypy on tierq's packages as they are installed: `python ops/typecheck.py [mypy args]`.

tierq maps folders to package names (pyproject.toml, `[tool.setuptools.package-dir]`:
`worker/` is `tierq.worker`). An editable install serves that mapping through an import hook,
which mypy does not follow (it reads the file system), so this script builds a view of the
packages out of links to the real folders under build/typecheck/ and runs mypy there. Links,
not copies: a new module is seen at once. mypy's messages name files by their package path
(tierq/worker/... for worker/...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VIEW = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        config = tomllib.load(file)
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return mapping


def build_view() -> list[str]:
    """Link each mapped package into the view; return the top-level package names."""
    shutil.rmtree(VIEW, ignore_errors=True)
    mapping = package_dirs()
    tops: list[str] = []
    # Parents first, so a mapped subpackage is linked inside its parent's folder of links.
    for name in sorted(mapping, key=lambda n: n.count(".")):
        source = ROOT / mapping[name]
        target = VIEW.joinpath(*name.split("."))
        if "." not in name:
            tops.append(name)
        if name in {n.rsplit(".", 1)[0] for n in mapping if "." in n}:
            # A parent of mapped subpackages: a real folder holding links to its entries.
            target.mkdir(parents=True, exist_ok=True)
            for entry in source.iterdir():
                if entry.name not in {"__pycache__"} and not (target / entry.name).exists():
                    (target / entry.name).symlink_to(os.path.relpath(entry, target))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.path.relpath(source, target.parent))
    return tops


def main() -> int:
    tops = build_view()
    args = [arg for top in tops for arg in ("-p", top)]
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    # The cache lives outside the view, which is rebuilt on every run.
    command += ["--cache-dir", str(ROOT / ".mypy_cache")]
    return subprocess.call([*command, *args, *sys.argv[1:]], cwd=VIEW)


if __name__ == "__main__":
    sys.exit(main())
