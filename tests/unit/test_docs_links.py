"""Every relative link in README.md and docs/*.md points at a file that exists and, with a ``#fragment``, at a
heading of that file (GitHub's anchor rule), so moving a section cannot leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped (``-`` and ``_`` kept), spaces -> ``-``.

    Example:
        >>> github_anchor("Twice F4's training nodules (F6, issue 16)")
        'twice-f4s-training-nodules-f6-issue-16'
    """
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    in_code, found = False, set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(github_anchor(line.lstrip("#")))
    return found


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_docs_link_check_sees_a_dead_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n[ok](a.md#top) [gone](b.md) [bad](a.md#nowhere)\n")
    assert relative_links(tmp_path / "a.md") == ["a.md#top", "b.md", "a.md#nowhere"]
    assert anchors(tmp_path / "a.md") == {"top"}
