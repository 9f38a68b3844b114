"""Every docs page that the code cites exists, with the heading it names.

Help texts, docstrings and comments point readers at the documentation site's pages: ``docs/<page>.md``,
optionally followed by ``, "<heading>"`` or ``#<anchor>``, or a Markdown link ``[text](<page>.md#anchor)``
in a docstring that the API page renders. A page renamed or a heading reworded leaves such a pointer
dangling, so this collects them all (the CLI's help through its parser, the rest from the source text)
and checks each against ``docs/`` and the site's navigation. The README is a product page whose sections
come and go; the code cites the docs pages instead.
"""
from __future__ import annotations

import argparse
import re
import unicodedata
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "hyperseg"
DOCS = REPO / "docs"

_DOCS_CITATION = re.compile(r'\bdocs/(?P<page>[\w/-]+\.md)(?:#(?P<anchor>[\w-]+)|,\s*"(?P<heading>[^"]+)")?')
_LINK_CITATION = re.compile(r'\]\((?P<page>[\w/-]+\.md)(?:#(?P<anchor>[\w-]+))?\)')
_README_CITATION = re.compile(r'\bREADME\b(?:\.md)?(?:(?:,|:)?\s*"(?P<heading>[^"]+)")?')
_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX_HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$")


class Citation(NamedTuple):
    where: str
    page: Optional[str]  # None: the README
    heading: Optional[str] = None
    anchor: Optional[str] = None

    def __str__(self) -> str:
        target = f"docs/{self.page}" if self.page else "README"
        if self.heading:
            target += f', "{self.heading}"'
        if self.anchor:
            target += f"#{self.anchor}"
        return f"{self.where}: {target}"


def _flat(text: str) -> str:
    """A wrapped comment or docstring as one line: newlines, indentation and comment marks become a space."""
    return re.sub(r"\s*\n\s*(?:#+\s*)?", " ", text)


def citations_in(text: str, where: str) -> list[Citation]:
    text = _flat(text)
    found = [Citation(where, m["page"], m["heading"], m["anchor"]) for m in _DOCS_CITATION.finditer(text)]
    found += [Citation(where, m["page"], None, m["anchor"]) for m in _LINK_CITATION.finditer(text)]
    found += [Citation(where, None, m["heading"]) for m in _README_CITATION.finditer(text)]
    return found


def _help_texts(parser: argparse.ArgumentParser, prog: str) -> Iterator[tuple[str, str]]:
    for text in (parser.description, parser.epilog):
        if text:
            yield prog, text
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.help:
                    yield f"{prog} {choice.dest}", choice.help
            for name, sub in action.choices.items():
                yield from _help_texts(sub, f"{prog} {name}")
        elif action.help and action.help != argparse.SUPPRESS:
            option = action.option_strings[0] if action.option_strings else action.dest
            yield f"{prog} {option}", action.help


def collect_citations() -> list[Citation]:
    from hyperseg.cli import build_parser

    found = []
    for where, text in _help_texts(build_parser(), "hyperseg"):
        found += citations_in(text, f"help of {where}")
    for path in sorted(SRC.rglob("*")):
        if path.suffix in (".py", ".md") and "__pycache__" not in path.parts:
            found += citations_in(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    return found


def _plain(text: str) -> str:
    """Heading text as a reader sees it: no code or emphasis marks, one space between words."""
    return " ".join(re.sub(r"[`*_]", "", text).split()).casefold()


def _slug(text: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs) gives a heading."""
    text = unicodedata.normalize("NFKD", re.sub(r"[`*]", "", text)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def headings(page: Path) -> list[str]:
    """The page's ATX headings, outside fenced code blocks (a ``# comment`` in a shell block is none)."""
    found, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := _ATX_HEADING.match(line)):
            found.append(m["text"])
    return found


def _nav_pages(node) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_pages(value)


def site_pages() -> set[str]:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    return {page for page in _nav_pages(config.get("nav", [])) if page.endswith(".md")}


def problems(citations: list[Citation], docs: Path = DOCS, pages: Optional[set[str]] = None) -> list[str]:
    """One line per citation that points nowhere; empty when every one resolves."""
    pages = site_pages() if pages is None else pages
    bad = []
    for c in citations:
        if c.page is None:
            bad.append(f"{c}: cites the README; cite the docs page (docs/<page>.md) that holds it")
            continue
        path = docs / c.page
        if not path.is_file():
            bad.append(f"{c}: no such page in docs/")
            continue
        if c.page not in pages:
            bad.append(f"{c}: docs/{c.page} is not in mkdocs.yml's nav, so not on the site")
        titles = headings(path)
        if c.heading and _plain(c.heading) not in {_plain(t) for t in titles}:
            bad.append(f"{c}: docs/{c.page} has no heading {c.heading!r}; its headings: {titles}")
        if c.anchor and c.anchor not in {_slug(t) for t in titles}:
            bad.append(f"{c}: docs/{c.page} has no heading with the anchor #{c.anchor}")
    return bad


def test_every_cited_docs_page_and_heading_exists():
    citations = collect_citations()
    assert any(c.where.startswith("help of") for c in citations), "the --data help cites the data layouts' page"
    assert len({c.where for c in citations}) >= 5, f"too few citations found, the collector is broken: {citations}"
    bad = problems(citations)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("text, wanted", [
    ('dataset root (README: "Data" gives each layout)', "cites the README"),
    ('measured on the development CPU (see README, "Speed")', "cites the README"),
    ("details in docs/nowhere.md", "no such page"),
    ('see docs/results.md, "Speed and accuracy"', "has no heading"),
    ("see docs/results.md#no-such-anchor", "no heading with the anchor"),
    ("see [the results](results.md#no-such-anchor)", "no heading with the anchor"),
    ('a wrapped comment (docs/results.md,\n    # "No such heading")', "has no heading"),
])
def test_a_dangling_citation_is_reported(tmp_path, text, wanted):
    (tmp_path / "results.md").write_text('# Results\n\n```bash\n# Speed and accuracy\n```\n\n## Speed\n')
    bad = problems(citations_in(text, "example"), docs=tmp_path, pages={"results.md"})
    assert len(bad) == 1 and wanted in bad[0], bad


@pytest.mark.parametrize("text", [
    'see docs/results.md, "Speed"', "see docs/results.md#speed", "see [the results](results.md)",
    "see docs/results.md", 'a wrapped comment (docs/results.md,\n    # "Speed")',
])
def test_a_citation_that_resolves_passes(tmp_path, text):
    (tmp_path / "results.md").write_text("# Results\n\n## Speed\n")
    citations = citations_in(text, "example")
    assert citations and not problems(citations, docs=tmp_path, pages={"results.md"})
