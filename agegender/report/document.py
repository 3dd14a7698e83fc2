"""The report as a list of blocks: Markdown from the blocks, HTML from that Markdown.

Each block is written once, as Markdown. report.md is that Markdown; report.html is
markdown-it's rendering of it inside a page shell, so the two cannot disagree. The HTML
target also shows the blocks marked only="html" (face thumbnails) and embeds every figure
as a data URI; report.md is committed to git, so it must never show a face.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from agegender.files import written
from agegender.layout import REPORT_MD


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str  # one paragraph of Markdown (`code` spans and the like)
    only: str = ""  # "markdown" or "html" to show it in one document only


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    only: str = ""
    folded: str = ""  # HTML: collapsed under this summary (long reference tables)


@dataclass
class Figure:
    path: Path  # the PNG under reports/figures
    caption: str
    only: str = ""  # "html" for face thumbnails: they never go into report.md
    folded: bool = False  # HTML: shown full size on a click (tall layer graphs)


@dataclass
class Code:
    text: str
    folded: str = ""  # HTML: collapsed under this summary (params.yaml in full)


Block = Heading | Text | Bullets | Table | Figure | Code
NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+(%| pts| s| years)?$|^–$")


def numbered(blocks: list[Block]) -> list[Block]:
    """Level-2 headings numbered in the order they come: '1. Data', '2. Model A: ...'.

    Sections are numbered here, when the document is rendered, never where they are written,
    so a section can be added, dropped or moved without renumbering the others.
    """
    out: list[Block] = []
    for block in blocks:
        if isinstance(block, Heading) and block.level == 2:
            block = Heading(
                2, f"{sum(isinstance(b, Heading) and b.level == 2 for b in out) + 1}. {block.text}"
            )
        out.append(block)
    return out


def visible(blocks: list[Block], target: str) -> Iterator[tuple[int, Block]]:
    """The blocks `target` shows, each with the current figure number.

    Every figure counts, shown or not, so Markdown and HTML number figures alike.
    """
    number = 0
    for block in blocks:
        if isinstance(block, Figure):
            number += 1
        if getattr(block, "only", "") in ("", target):
            yield number, block


def slug(text: str) -> str:
    """A heading's anchor: '1. Data' -> '1-data'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def numeric_columns(table: Table) -> list[bool]:
    """Right-align a column when every cell is a number (or the missing-value dash)."""
    columns = [[row[i] for row in table.rows if row[i]] for i in range(len(table.header))]
    return [bool(cells) and all(NUMERIC.match(c) for c in cells) for cells in columns]


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def relative_link(path: Path) -> str:
    """Where report.md finds a figure: relative to it, so it renders in git forges too."""
    return path.relative_to(REPORT_MD.parent).as_posix()


SVG_DATA = "data:image/svg+xml;base64,"


def data_uri(path: Path) -> str:
    """The image itself (PNG or SVG), so report.html needs no other file."""
    head = SVG_DATA if path.suffix == ".svg" else "data:image/png;base64,"
    return head + base64.b64encode(written(path).read_bytes()).decode("ascii")


def block_markdown(block: Block, number: int, image: Callable[[Path], str]) -> str:
    """One block as Markdown; `image` turns a figure's path into the link to put in it."""
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        align = ["---:" if num else "---" for num in numeric_columns(block)]
        lines = [block.header, align, *block.rows]
        return "\n".join("| " + " | ".join(map(md_cell, row)) + " |" for row in lines)
    if isinstance(block, Figure):
        return f"![{block.caption}]({image(block.path)})\n\n*Figure {number}. {block.caption}*"
    return f"```\n{block.text.rstrip()}\n```"


def to_markdown(blocks: list[Block]) -> str:
    """report.md: the blocks for Markdown, figures linked from reports/figures."""
    shown = visible(numbered(blocks), "markdown")
    parts = [block_markdown(b, n, relative_link) for n, b in shown]
    return "\n\n".join(parts) + "\n"


# --- HTML: markdown-it renders the Markdown; a shell adds CSS, contents and footer ------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif;
  color: #222; background: #fff; margin: 0; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #333; padding-bottom: .3rem; }
h2 { font-size: 1.4rem; margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1rem; margin-top: 1.8rem; }
nav { background: #f5f7fa; border: 1px solid #dde; padding: .5rem 1.2rem; }
nav ul { margin: .3rem 0; padding-left: 1rem; list-style: none; }
a { color: #1a56a8; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccd; padding: .25rem .6rem; vertical-align: top; }
th { background: #eef1f6; text-align: left; }
tr:nth-child(even) td { background: #fafbfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2rem 0; }
figure p { margin: .3rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure em, summary { font-size: .9rem; color: #555; font-style: normal; }
details { margin: 1rem 0; }
details img { max-width: 100%; height: auto; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; font-size: .9em; }
pre { background: #f6f8fa; border: 1px solid #dde; padding: .8rem; overflow-x: auto;
  font-size: .85rem; line-height: 1.35; }
pre code { background: none; padding: 0; }
footer { margin-top: 3rem; color: #777; font-size: .85rem; }
"""


def heading_with_id(self, tokens: list[Token], idx: int, options, env) -> str:
    """<h2 id="1-data">: the anchors the table of contents links to."""
    tokens[idx].attrSet("id", slug(tokens[idx + 1].content))
    return self.renderToken(tokens, idx, options, env)


def numeric_cell(self, tokens: list[Token], idx: int, options, env) -> str:
    """A `---:` column's cell: class=num (right-aligned, tabular digits) for the CSS."""
    token = tokens[idx]
    if token.attrGet("style") == "text-align:right":
        return f"<{token.tag} class=num>"
    return self.renderToken(tokens, idx, options, env)


# Raw HTML in the Markdown stays text: a `<` or `&` in a cell shows as itself, escaped once.
MARKDOWN = MarkdownIt("commonmark", {"html": False, "xhtmlOut": False}).enable("table")
_safe_link = MARKDOWN.validateLink
# markdown-it refuses data:image/svg+xml links (an SVG can carry script); ours are the
# charts this report draws, so they pass.
MARKDOWN.validateLink = lambda url: url.startswith(SVG_DATA) or _safe_link(url)
MARKDOWN.add_render_rule("heading_open", heading_with_id)
MARKDOWN.add_render_rule("th_open", numeric_cell)
MARKDOWN.add_render_rule("td_open", numeric_cell)


def raw(text: str) -> Token:
    """Shell markup between blocks (nav, figure wrappers): written as is."""
    return Token("html_block", "", 0, content=text)


def contents(blocks: list[Block]) -> list[Token]:
    """The table of contents: a Markdown list of links to the level-2 headings."""
    headings = [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]
    links = MARKDOWN.parse("\n".join(f"- [{text}](#{slug(text)})" for text in headings))
    return [raw("<nav><strong>Contents</strong>\n"), *links, raw("</nav>\n")]


def to_html(blocks: list[Block], title: str) -> str:
    """One file, no external reference: CSS inline, figures as data URIs, no scripts.

    Each block's Markdown (the same as report.md's, figures as data URIs) is parsed by
    markdown-it; figures are wrapped in <figure>, or <details> when folded, and the table
    of contents follows the title.
    """
    tokens: list[Token] = []
    blocks = numbered(blocks)
    for number, block in visible(blocks, "html"):
        part = MARKDOWN.parse(block_markdown(block, number, data_uri))
        if isinstance(block, Figure) and block.folded:
            summary = MARKDOWN.renderInline(f"Figure {number}. {block.caption} (click to show)")
            part = [raw(f'<details id="figure-{number}"><summary>{summary}</summary>\n'), *part]
            part.append(raw("</details>\n"))
        elif isinstance(block, Figure):
            part = [raw(f'<figure id="figure-{number}">\n'), *part, raw("</figure>\n")]
        elif isinstance(block, Table | Code) and block.folded:
            summary = MARKDOWN.renderInline(f"{block.folded} (click to show)")
            part = [raw(f"<details><summary>{summary}</summary>\n"), *part, raw("</details>\n")]
        tokens += part
        if isinstance(block, Heading) and block.level == 1:
            tokens += contents(blocks)
    body = MARKDOWN.renderer.render(tokens, MARKDOWN.options, {})
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}"
        '<footer id="end">Generated by <code>python -m stages.report</code> from the outputs '
        "of the DVC pipeline; self-contained, opens offline.</footer>\n</main>\n</body>\n</html>\n"
    )
