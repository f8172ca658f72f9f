"""The documentation stays true: a short front page, no dead links, a configuration page that
is the settings' own.

Pure reading of the repository's Markdown files and of `tierq.core.settings`; no Redis.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from tierq.core.settings import IGNORED_PREFIXES, Settings
from tierq.devkit import config_reference

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
FRONT_PAGE_MAX_LINES = 200

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
_VARIABLE = re.compile(r"\b(?:TIERQ|OPENAI)_[A-Z][A-Z0-9_]*")
_PATH = re.compile(r"`((?:[\w.-]+/)+[\w.-]+\.(?:py|md|sh|yml|yaml|json|lua|toml))`")


def pages() -> list[Path]:
    """The README, every page under docs/, and the runbook, which they link to."""
    return [README, *sorted(DOCS.rglob("*.md")), ROOT / "ops" / "RUNBOOK.md"]


def prose(path: Path) -> str:
    """A page without its fenced code blocks, where a `[x](y)` is code, not a link."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def links(path: Path) -> Iterator[str]:
    for target in _LINK.findall(prose(path)):
        if not re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not ours to check
            yield target


def anchors(path: Path) -> set[str]:
    """The fragment ids GitHub gives a page's headings (a repeated one gets `-1`, `-2`, ...)."""
    found: set[str] = set()
    for heading in _HEADING.findall(prose(path)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, repeat = slug, 0
        while candidate in found:
            repeat += 1
            candidate = f"{slug}-{repeat}"
        found.add(candidate)
    return found


def test_the_configuration_page_is_what_the_settings_say() -> None:
    committed = CONFIGURATION.read_text(encoding="utf-8") if CONFIGURATION.exists() else ""
    assert committed == config_reference.render(), (
        f"{CONFIGURATION.relative_to(ROOT)} is out of date with tierq/core/settings.py: "
        f"run `{config_reference.COMMAND}` and commit the page"
    )


def test_the_check_command_fails_on_a_stale_page_and_passes_on_a_fresh_one(
    tmp_path: Path,
) -> None:
    # Given a page that says something the settings do not
    page = tmp_path / "configuration.md"
    page.write_text(config_reference.render().replace("`8700`", "`8701`"), encoding="utf-8")
    runner = CliRunner()

    # When the check runs, it fails and names the command that fixes it
    stale = runner.invoke(config_reference.main, ["--check", "--path", str(page)])
    assert stale.exit_code == 1
    assert config_reference.COMMAND in stale.output

    # Then writing the page makes the check pass
    assert runner.invoke(config_reference.main, ["--path", str(page)]).exit_code == 0
    assert runner.invoke(config_reference.main, ["--check", "--path", str(page)]).exit_code == 0


def test_every_setting_has_a_description() -> None:
    models: list[type[BaseModel]] = [Settings]
    missing = []
    while models:
        model = models.pop()
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{model.__name__}.{name}")
            for inner in _models_in(field.annotation):
                models.append(inner)
    assert missing == []


def test_the_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= FRONT_PAGE_MAX_LINES, (
        f"README.md has {len(lines)} lines; a front page has at most {FRONT_PAGE_MAX_LINES}: "
        "move the detail to a page under docs/ and link it"
    )


def test_the_readme_links_every_page_under_docs() -> None:
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    unlinked = [
        str(path.relative_to(ROOT))
        for path in sorted(DOCS.rglob("*"))
        if path.is_file() and path.resolve() not in linked
    ]
    assert unlinked == []


def broken_links(page: Path) -> list[str]:
    """Relative links of `page` to a file that does not exist, or to a heading it lacks."""
    broken = []
    for target in links(page):
        file_part, _, fragment = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no such heading")
    return broken


def test_the_checks_see_broken_links_and_unknown_variables(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n## `TIERQ_GATEWAY`: the gateway\n\n"
        "[here](#tierq_gateway-the-gateway) [gone](missing.md) [nowhere](#no-such-heading)\n"
        "[web](https://example.com)\n\n```\n[in code](also-missing.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["missing.md: no such file", "#no-such-heading: no such heading"]
    assert _sets_something("TIERQ_TIERS__BULK__MODELS")
    assert _sets_something("OPENAI_API_KEY")
    assert not _sets_something("TIERQ_GATEWAY__PORTS")
    assert not _sets_something("TIERQ_TIERS__FAST__MODEL")
    assert not _sets_something("TIERQ_REDIS")


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_something_that_exists(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_file_a_page_names_exists(page: Path) -> None:
    # Paths in code spans (`tierq/core/keys.py`) are read from the repository's root.
    missing = sorted(
        {path for path in _PATH.findall(page.read_text("utf-8")) if not (ROOT / path).exists()}
    )
    assert missing == []


@pytest.mark.parametrize("page", pages(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_variable_a_page_names_is_a_setting(page: Path) -> None:
    unknown = sorted(
        {name for name in _VARIABLE.findall(page.read_text("utf-8")) if not _sets_something(name)}
    )
    assert unknown == []


def _sets_something(variable: str) -> bool:
    """Whether `variable` (or the start of it, as in `TIERQ_TIERS__<TIER>__...`) names a
    setting, walking nested groups and tables by the settings' own delimiter."""
    if variable.startswith(IGNORED_PREFIXES):
        return True  # tierq's test and benchmark tooling, not a setting
    aliases = {
        str(choice).upper(): name
        for name, field in Settings.model_fields.items()
        for choice in getattr(field.validation_alias, "choices", [])
    }
    if variable in aliases:
        return True
    parts = variable.removeprefix("TIERQ_").lower().split("__")
    model: type[BaseModel] = Settings
    while parts:
        name = parts.pop(0)
        if not name:  # a prefix such as TIERQ_GATEWAY__ in "TIERQ_GATEWAY__HOST / __PORT"
            return True
        field = model.model_fields.get(name)
        if field is None:
            return False
        inner = _models_in(field.annotation)
        if typing.get_origin(_unwrap(field.annotation)) is dict and parts:
            parts.pop(0)  # the table's key: a tier's or a group's name
        if not inner or not parts:
            return not parts
        model = inner[0]
    return True


def _unwrap(annotation: object) -> object:
    """The type a field holds, without `Annotated[...]` or `| None`."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        else:
            return annotation


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The models a field holds: itself, or a table's values."""
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) is dict:
        annotation = _unwrap(typing.get_args(annotation)[1])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


# A repository path named in code or its comments and docstrings ("see worker/recovery.py").
_SOURCE_PATH = re.compile(
    r"(?<![\w/.-])((?:tierq|worker|producers|simulator|tests|benchmarks|ops|docs)"
    r"/[\w/.-]*[\w-]\.(?:py|md|sh|yml|yaml|json|lua))"
)


def source_files() -> list[Path]:
    folders = ("tierq", "worker", "producers", "simulator", "tests", "benchmarks", "ops")
    return sorted(
        path
        for folder in folders
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts and "node_modules" not in path.parts
    )


def test_the_source_path_check_sees_paths_in_prose() -> None:
    text = "x = 1  # see worker/jobstore.py and tierq/core/lua/claim.lua; not a/worker/x.py"
    assert _SOURCE_PATH.findall(text) == ["worker/jobstore.py", "tierq/core/lua/claim.lua"]


def test_every_file_the_code_names_exists() -> None:
    # Docstrings and comments that point at a moved module mislead the next reader. (What the
    # benchmarks write under benchmarks/results/ exists only after a run.)
    missing = sorted(
        f"{path.relative_to(ROOT)}: {named}"
        for path in source_files()
        if path != Path(__file__).resolve()
        for named in set(_SOURCE_PATH.findall(path.read_text("utf-8")))
        if not (ROOT / named).exists() and not named.startswith("benchmarks/results/")
    )
    assert missing == []
