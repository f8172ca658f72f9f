"""ops/bootstrap.sh installs only when what is installed does not already serve the caller.

`./ops/demo.sh` asks for tierq alone, `./ops/test.sh` for its `dev` extra; a `dev` install
serves the demo too, so running the two in turn must not reinstall each time. The script runs
for real, in a copy of the project's layout whose `.venv/bin/python` is a stand-in that records
the pip commands it is given instead of installing (a real install takes minutes and the
network, and would replace the venv the other tests run in).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDING_PYTHON = '#!/bin/sh\necho "$*" >> "$(dirname "$0")/../pip-commands.log"\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with ops/bootstrap.sh, a pyproject.toml, and a venv that records installs.

    Its KEDA tools are stamped as installed, so the `dev` extra's npm step does nothing."""
    (tmp_path / "ops" / "tools" / "node_modules").mkdir(parents=True)
    script = tmp_path / "ops" / "bootstrap.sh"
    script.write_text((ROOT / "ops" / "bootstrap.sh").read_text())
    script.chmod(0o755)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "tierq"\n')
    lock = tmp_path / "ops" / "tools" / "package-lock.json"
    lock.write_text("{}\n")
    tools_stamp = tmp_path / "ops" / "tools" / "node_modules" / ".tierq-installed"
    tools_stamp.write_text(hashlib.sha256(lock.read_bytes()).hexdigest() + "\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(RECORDING_PYTHON)
    python.chmod(0o755)
    return tmp_path


def bootstrap(project: Path, *extras: str) -> list[str]:
    """Run `ops/bootstrap.sh EXTRAS`; the targets it installed (`.`, `.[dev]`), if any."""
    log = project / ".venv" / "pip-commands.log"
    before = log.read_text().splitlines() if log.exists() else []
    subprocess.run(
        [project / "ops" / "bootstrap.sh", *extras],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    commands = log.read_text().splitlines()[len(before) :] if log.exists() else []
    return [command.split(" -e ")[1] for command in commands if " -e " in command]


def test_a_dev_install_serves_the_demo_so_alternating_installs_nothing(project: Path) -> None:
    # Given the tests' install (the first run installs: the stand-in records it)
    assert bootstrap(project, "dev") == [".[dev]"]

    # When the demo and the tests take turns
    turns = [bootstrap(project), bootstrap(project, "dev"), bootstrap(project)]

    # Then none of them installs again
    assert turns == [[], [], []]


def test_the_tests_after_the_demo_add_their_extra_once(project: Path) -> None:
    assert bootstrap(project) == ["."]

    assert bootstrap(project, "dev") == [".[dev]"]
    assert bootstrap(project) == []
    assert bootstrap(project, "dev") == []


def test_a_changed_pyproject_installs_again(project: Path) -> None:
    assert bootstrap(project, "dev") == [".[dev]"]

    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write('version = "2"\n')

    assert bootstrap(project) == ["."]
    assert bootstrap(project, "dev") == [".[dev]"]
