"""The report as one self-contained HTML file: images embedded as base64 PNG data URIs, the style
inline, no script and no external address, so the file opens anywhere, offline."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.92em; margin: 0.8em 0; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.ci { color: #777; font-size: 0.85em; } .note { color: #555; font-size: 0.92em; }
img { max-width: 100%; }
"""


@dataclass
class Section:
    """One part of the report: a heading, paragraphs (plain text), an optional table and figure."""

    title: str
    paragraphs: Sequence[str] = ()
    table: tuple[Sequence[str], Sequence[Sequence[str]]] | None = None  # header, rows (cells: plain text)
    image: bytes | None = None  # PNG
    alt: str = ""
    notes: Sequence[str] = field(default_factory=tuple)


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(text: str) -> str:
    """A cell's text; a trailing ``[lo, hi]`` interval is set smaller."""
    if text.endswith("]") and " [" in text:
        value, ci = text.split(" [", 1)
        return f"{esc(value)} <span class=ci>[{esc(ci)}</span>"
    return esc(text)


def _section(s: Section) -> str:
    parts = [f"<h2>{esc(s.title)}</h2>"]
    parts += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
    if s.table is not None:
        parts.append(_table(*s.table))
    if s.image is not None:
        data = base64.b64encode(s.image).decode("ascii")
        parts.append(f'<img src="data:image/png;base64,{data}" alt="{esc(s.alt or s.title)}">')
    parts += [f"<p class=note>{esc(n)}</p>" for n in s.notes]
    return "<section>\n" + "\n".join(parts) + "\n</section>"


def page(title: str, intro: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole HTML document."""
    body = "\n".join(_section(s) for s in sections)
    lead = "\n".join(f"<p>{esc(p)}</p>" for p in intro)
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n{lead}\n{body}\n</body>\n</html>\n"
    )
