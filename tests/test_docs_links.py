"""Every relative link and image in README.md and docs/*.md points at a file of the repository, and every
``#anchor`` at a heading of its page (GitHub's heading slugs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets and parentheses are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda match: match.group(0)[1:-1], heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            slug, number = _slug(match.group(1)), 1
            candidate = slug
            while candidate in anchors:  # GitHub numbers repeated headings: slug, slug-1, slug-2
                candidate, number = f"{slug}-{number}", number + 1
            anchors.add(candidate)
    return anchors


def _relative_links(page: Path) -> list[str]:
    return [
        target for target in LINK.findall(_prose(page.read_text())) if not re.match(r"[a-z]+:", target, re.IGNORECASE)
    ]


def test_the_slug_rule_on_known_headings():
    assert _slug("Multi-person pose (paper §4.2)") == "multi-person-pose-paper-42"
    assert _slug("On the raccoon photos: the main job") == "on-the-raccoon-photos-the-main-job"
    assert _slug("Obj-box and kps-box") == "obj-box-and-kps-box"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT) if ROOT in linked.parents else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_pages_link_to_each_other():
    """Every docs page is reachable from the README, directly or through the methods table."""
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in _relative_links(ROOT / "README.md")}
    unlinked = [page.name for page in PAGES[1:] if page.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
