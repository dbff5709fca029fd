"""The README and docs/ as a user meets them: every relative link leads to a file (and heading) that exists, and
every path of this repository they name is there, so a page cannot point at a file that has moved."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# A path of this repository, as the pages write it in prose or commands (not preceded by a path character, so
# `custom_nodes/...` or `ComfyUI/models/emo` are not taken for `nodes/...` or `models/...`).
REPO_PATH = re.compile(r"(?<![\w/.<>-])((?:emo_pipeline|nodes|web|tests|benchmarks|example_workflows|docs|models/demo)"
                       r"(?:/[\w.*{},-]+)*/?)(?![\w./<*{},-])")  # `tests/make_<family>_keys.py` is a pattern, not a path
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def _expand(path: str) -> list[str]:
    """`face_analysis/models/{a,b}.onnx` → both names; a glob stays a glob."""
    match = re.search(r"\{([^}]*)\}", path)
    if not match:
        return [path]
    return [p for part in match.group(1).split(",") for p in _expand(path[:match.start()] + part + path[match.end():])]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        destination = (page.parent / file).resolve() if file else page
        if not destination.exists():
            broken.append(target)
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(target)
    assert broken == [], f"{page.name}: links to nothing: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_repository_path_named_exists(page):
    text = page.read_text()
    missing = []
    for named in sorted(set(REPO_PATH.findall(text))):
        named = named.rstrip(".,")
        for path in _expand(named):
            if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                missing.append(path)
    assert missing == [], f"{page.name} names paths that are not in the repository: {missing}"


def test_the_checks_catch_a_moved_file(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See `emo_pipeline/io/download/catalogue.py` and [the models](models.md#nowhere).\n")
    assert [p for p in REPO_PATH.findall(page.read_text()) if not (ROOT / p).exists()] \
        == ["emo_pipeline/io/download/catalogue.py"]
    assert LINK.findall(page.read_text()) == ["models.md#nowhere"]
    assert "downloads" in _anchors(ROOT / "docs" / "models.md") and "nowhere" not in _anchors(ROOT / "docs" / "models.md")
