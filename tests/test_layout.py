"""The package layout holds: one import namespace, and imports that run one way only.

docs/architecture.md states the rules; these tests are how they are kept. The sides are the
folders: `worker/` (tierq.worker) and `producers/` (tierq.producers) each import the shared
core (`tierq/core/`, tierq.core) and never each other; the core imports neither; nothing
imports a bare `worker`, `producers`, `devkit` or `simulator`, which an app's own modules of
those names would shadow; and the simulator (tierq_simulator) imports nothing of tierq at
all. Pure reading of the source with `ast`, plus one real import in a subprocess.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each folder installs as (pyproject.toml's package-dir, read below and checked here).
SIDES = {"worker": "tierq.worker", "producers": "tierq.producers", "tierq/core": "tierq.core"}
# Names that an app's own module could shadow if tierq imported them bare.
GENERIC = {"worker", "producers", "devkit", "simulator"}
# Which of tierq's packages each folder must never import, by import statement or by a dotted
# name in a string (a lazy import such as click's "module:attribute").
FORBIDDEN = {
    "tierq/core": ("tierq.worker", "tierq.producers", "tierq.devkit", "tierq_simulator"),
    "worker": ("tierq.producers", "tierq.devkit", "tierq_simulator"),
    "producers": ("tierq.worker", "tierq.devkit", "tierq_simulator"),
}
# The simulator is a separate product that stands in for the API: it imports nothing of tierq
# (worker, producers, devkit or the shared core), or tests against it would pass by construction.
SIMULATOR_FORBIDDEN = ("tierq",)


def python_files(folder: str) -> Iterator[Path]:
    yield from sorted((ROOT / folder).rglob("*.py"))


def imported_names(source: str) -> Iterator[tuple[int, str]]:
    """Every module an import statement names (absolute imports; tierq uses no relative ones)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import on line {node.lineno}"
            module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def dotted_strings(source: str) -> Iterator[tuple[int, str]]:
    """String constants that name a module, as lazy imports do ("tierq.worker.cli:command")."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value.split(":", 1)[0]
            if value.startswith(("tierq.", "tierq_simulator")) and " " not in value:
                yield node.lineno, value


def forbidden_names(source: str, forbidden: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """Each module named in `source`, by import or lazy string, that is one of `forbidden`."""
    for lineno, name in [*imported_names(source), *dotted_strings(source)]:
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
            yield lineno, name


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in python_files(folder):
        for lineno, name in forbidden_names(path.read_text(encoding="utf-8"), forbidden):
            found.append(f"{path.relative_to(ROOT)}:{lineno} names {name}")
    return found


def test_the_checker_sees_imports_statements_and_lazy_strings() -> None:
    source = textwrap.dedent(
        """
        import tierq.worker.tasks
        from tierq.producers import client
        LAZY = {"worker": "tierq.worker.cli:worker_command"}
        """
    )
    names = {name for _, name in [*imported_names(source), *dotted_strings(source)]}
    assert {"tierq.worker.tasks", "tierq.producers.client", "tierq.worker.cli"} <= names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_each_side_imports_only_the_core_and_itself(folder: str) -> None:
    assert violations(folder, FORBIDDEN[folder]) == []


def test_no_module_imports_a_bare_generic_top_level_name() -> None:
    found = []
    for folder in ("tierq", "worker", "producers", "simulator", "tests", "benchmarks"):
        for path in python_files(folder):
            for lineno, name in imported_names(path.read_text(encoding="utf-8")):
                if name.split(".")[0] in GENERIC:
                    found.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
    assert found == []


def test_the_simulator_imports_nothing_of_tierq() -> None:
    assert violations("simulator", SIMULATOR_FORBIDDEN) == []


def test_the_simulator_check_sees_every_way_of_naming_tierq() -> None:
    # (the check can fail: each of these names tierq, and none is the simulator's own package)
    source = textwrap.dedent(
        """
        import tierq
        from tierq.core import tokens
        from tierq.core.tokens import encoding
        import tierq_simulator.tokens
        LAZY = "tierq.worker.cli:worker_command"
        """
    )
    hits = {name for _, name in forbidden_names(source, SIMULATOR_FORBIDDEN)}
    assert {"tierq", "tierq.core", "tierq.core.tokens.encoding", "tierq.worker.cli"} <= hits
    assert not any(name.startswith("tierq_simulator") for name in hits)


def test_every_package_folder_is_installed_under_its_name() -> None:
    with (ROOT / "pyproject.toml").open("rb") as file:
        setuptools = tomllib.load(file)["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools["package-dir"]
    for folder, name in SIDES.items():
        top = folder.split("/")[0]
        assert mapping.get(name, mapping.get(top)) in (folder, top)
    # Each folder that holds files (modules, or data such as the .lua scripts), named as it
    # installs: all must be listed, or a wheel would leave them out while the editable install
    # still finds them.
    by_folder = {path: name for name, path in mapping.items()}
    expected = set()
    for folder, name in by_folder.items():
        for file in (ROOT / folder).rglob("*"):
            relative = file.parent.relative_to(ROOT / folder).parts
            if file.is_file() and all(not part.startswith((".", "_")) for part in relative):
                expected.add(".".join([name, *relative]))
    assert set(setuptools["packages"]) == expected


def test_an_app_with_its_own_worker_and_producers_modules_can_import_tierq(
    tmp_path: Path,
) -> None:
    # Given an app directory whose own modules carry tierq's folder names
    for name in GENERIC:
        (tmp_path / f"{name}.py").write_text(f"raise SystemExit('the app\\'s {name}.py')\n")
    run = [sys.executable, "-c"]
    # (the directory does shadow those names: a bare import finds the app's module)
    shadowed = subprocess.run(
        [*run, "import worker"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "the app's worker.py" in shadowed.stderr
    # When it imports tierq's public face and each side's entry modules
    code = (
        "from tierq import AsyncTierqClient, InvalidJobError, TierqClient\n"
        "import tierq.worker.tasks, tierq.worker.cli, tierq.producers.gateway.app\n"
        "import tierq.devkit.demo, tierq_simulator.app\n"
        "print(TierqClient.__module__, AsyncTierqClient.__module__)\n"
    )
    result = subprocess.run([*run, code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    # Then tierq's own modules load, none of the app's
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tierq.producers.client", "tierq.producers.aio"]


def test_importing_the_worker_side_does_not_load_the_producer_side() -> None:
    code = (
        "import sys, tierq.worker.tasks, tierq.worker.execution\n"
        "def producers():\n"
        "    return sorted(m for m in sys.modules if m.startswith('tierq.producers'))\n"
        "print(producers())\n"
        # (the check can see the producer side load: the public face's client does)
        "from tierq import TierqClient\n"
        "print('tierq.producers.client' in producers())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
