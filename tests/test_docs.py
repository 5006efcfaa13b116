"""The README and docs/ render as written: whole tables, closed fences, links that lead on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def render(page: Path) -> tuple[list[str], list[Token]]:
    text = page.read_text()
    return text.splitlines(), MarkdownIt("commonmark").enable("table").parse(text)


def cells(line: str) -> int:
    """Cells in a table row as GFM splits it: on every unescaped '|', code spans included."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_tables_are_whole(page: Path) -> None:
    lines, tokens = render(page)
    in_tables: set[int] = set()
    for token in tokens:
        if token.type == "table_open":
            assert token.map is not None
            start, end = token.map
            in_tables.update(range(start, end))
            width = cells(lines[start])
            for n in range(start, end):
                assert cells(lines[n]) == width, f"{page.name}:{n + 1}: row of another width"
    fenced = {n for t in tokens if t.type == "fence" and t.map for n in range(*t.map)}
    for n, line in enumerate(lines):
        if line.startswith("|") and n not in fenced:
            assert n in in_tables, f"{page.name}:{n + 1}: a table row outside any table"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_fences_are_closed(page: Path) -> None:
    lines, tokens = render(page)
    for token in tokens:
        if token.type == "fence":
            assert token.map is not None
            last = lines[token.map[1] - 1].strip()
            assert last.startswith(token.markup), f"{page.name}:{token.map[0] + 1}: unclosed"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_to_files_and_headings(page: Path) -> None:
    _, tokens = render(page)
    links = [
        child.attrGet("href")
        for token in tokens
        if token.type == "inline"
        for child in token.children or []
        if child.type == "link_open"
    ]
    for href in links:
        assert isinstance(href, str)
        if "://" in href:
            continue
        target, _, anchor = href.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link to a missing file: {href}"
        if anchor:
            _, heads = render(path)
            slugs = {slug(t.content) for i, t in enumerate(heads[1:]) if heads[i].tag[:1] == "h"}
            assert anchor in slugs, f"{page.name}: no heading #{anchor} in {path.name}"


def test_every_docs_page_has_a_title_and_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"the README's list does not link {page.name}"
        _, tokens = render(page)
        assert tokens[0].tag == "h1", f"{page.name} does not start with a title"


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    command = ".venv/bin/python -m pytest"
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_examples_are_plain_files() -> None:
    # Editing examples/example.c must never change the installed demo template.
    for path in (ROOT / "examples").iterdir():
        assert not path.is_symlink(), f"{path} is a symlink"
