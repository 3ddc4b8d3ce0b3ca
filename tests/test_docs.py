"""The documentation: a short README, every relative link live, every generated block up to
date, and text about the software only.

The commands the README and docs list are run by tests/test_doc_commands.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mift_kedro import results
from tests.conftest import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
#: Every Markdown page a reader reaches from the README: the README, docs/, and the READMEs of
#: the configuration and of the pipelines.
PAGES = sorted(
    {README, *(PROJECT_ROOT / "docs").glob("*.md"), PROJECT_ROOT / "conf" / "README.md",
     *(PROJECT_ROOT / "src" / "mift_kedro" / "pipelines").glob("*/README.md")}
)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail to a page of docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [m.group(1) for m in LINK.finditer(text)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(PROJECT_ROOT) if resolved.is_relative_to(PROJECT_ROOT) else resolved})")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no heading #{fragment} in {resolved.name})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_link_check_finds_a_broken_link_and_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## A part: `x`\n\n[ok](a.md#a-part-x) [code](`x`)\n")
    page = tmp_path / "b.md"
    page.write_text(
        "# B\n[fine](a.md#top) ![img](missing.png) [gone](a.md#nowhere) [web](https://x.org/y)\n"
        "```\n[not a link](nothing.md)\n```\n"
    )
    assert links(tmp_path / "a.md") == ["a.md#a-part-x"]
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.png", "a.md#nowhere"]


def test_docs_index_lists_every_page():
    index = (PROJECT_ROOT / "docs" / "index.md").read_text()
    pages = {p.name for p in (PROJECT_ROOT / "docs").glob("*.md")} - {"index.md"}
    listed = {target.partition("#")[0] for target in links(PROJECT_ROOT / "docs" / "index.md")}
    assert pages <= listed, f"docs/index.md does not list {sorted(pages - listed)}"
    assert "docs/index.md" in README.read_text() and index


@pytest.mark.parametrize("page", [README, *sorted((PROJECT_ROOT / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_generated_blocks_agree_with_the_result_files(page, monkeypatch):
    """Regenerate with `python -m mift_kedro.results render-readme` (from the project root:
    each block names its source by that relative path)."""
    monkeypatch.chdir(PROJECT_ROOT)
    text = page.read_text()
    assert results.render_readme(text, Path("docs/results")) == text
    assert results.documents(Path(".")).count(page.relative_to(PROJECT_ROOT)) == 1  # render-readme renders it


# --- the repository speaks of the software only ---------------------------------------------

#: Text about a project's management rather than its software: issue numbers, targets and
#: whether they were met, which machines the developers had, commits as a time axis.
MANAGEMENT = [
    r"\bissue\s*#?\d+",
    r"\b(?:goals?|targets?)\s*(?:>=|≥|<=|≤|of\b)",
    r"\b(?:not both|both|not|were|was|is|are|all) met\b",
    r"\bshort of the\b[^.\n]*\btarget",
    r"\b(?:of|before|after|since) commit\b",
    r"\bcommit [0-9a-f]{7,40}\b",
    r"\blent to\b",
    r"\b(?:no|a) (?:GPU|Hub access) (?:was|were) available\b",
    r"\bhad no (?:GPU|Hub)",
    r"\bsessions? so far\b",
    r"\bhas NOT run\b",
]


def management_text(text: str) -> list[str]:
    found = []
    for pattern in MANAGEMENT:
        found += [m.group(0) for m in re.finditer(pattern, text, re.IGNORECASE)]
    return found


def test_the_management_patterns_catch_what_they_should():
    assert management_text("as issue 11's target; short of the 2x target; Goals >= 6x, not both met") == [
        "issue 11", "Goals >=", "not both met", "short of the 2x target"]
    assert management_text("the trainer of commit 466140b; no GPU was available; it has NOT run yet") == [
        "of commit", "commit 466140b", "no GPU was available", "has NOT run"]
    assert management_text("LoRA target modules (target_modules); the metric; a SHA pins the data") == []


def test_no_project_management_text_in_the_repository():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    found = {}
    for name in files:
        path = PROJECT_ROOT / name
        if name == "tests/test_docs.py" or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # images, binary data
        hits = management_text(text)
        if hits:
            found[name] = hits
    assert found == {}
