"""A report document written twice at once: Markdown (figures as links) and one self-contained
HTML page (figures embedded as base64 PNG, a table of contents, tables with numeric columns
right-aligned). Used by the study report and the production audit report."""

from __future__ import annotations

import base64
import html as _html
import os
import re
from pathlib import Path

import pandas as pd

from ferwild.formatting import DASH
from ferwild.metrics import markdown_table

__all__ = ["Document", "md_table_html", "inline"]





_PIPE = re.compile(r"(?<!\\)\|")
_NUMERIC = re.compile(r"^[*\s]*[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?\s*%?"
                      r"(\s*±\s*\d[\d,]*\.?\d*\s*%?)?[*\s★]*$", re.IGNORECASE)


def inline(text: str) -> str:
    """HTML for one line of the report's Markdown subset: **bold**, `code`."""
    out = _html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return out


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


def md_table_html(md: str) -> str:
    """Turn a table written by :func:`ferwild.metrics.markdown_table` into an HTML table."""
    lines = [line for line in md.strip().splitlines() if line.strip()]

    def cells(line: str) -> list[str]:
        parts = _PIPE.split(line.strip())[1:-1]
        return [p.strip().replace("\\|", "|") for p in parts]

    header, body = cells(lines[0]), [cells(line) for line in lines[2:]]
    numeric = []
    for j in range(len(header)):
        filled = [r[j] for r in body if j < len(r) and r[j] not in ("", DASH)]
        numeric.append(bool(filled) and all(_NUMERIC.match(c) for c in filled))

    def row(values: list[str], tag: str) -> str:
        tds = []
        for j, v in enumerate(values):
            cls = ' class="num"' if j < len(numeric) and numeric[j] else ""
            tds.append(f"<{tag}{cls}>{inline(v)}</{tag}>")
        return "<tr>" + "".join(tds) + "</tr>"

    return ('<div class="table-wrap"><table>\n<thead>' + row(header, "th") + "</thead>\n<tbody>\n"
            + "\n".join(row(r, "td") for r in body) + "\n</tbody></table></div>")


class Document:
    """Headings, paragraphs, call-outs, tables and figures, kept as Markdown and HTML."""

    def __init__(self, root: Path):
        self.root = root
        self.md: list[str] = []
        self.html: list[str] = []
        self.toc: list[tuple[int, str, str]] = []
        self._slugs: set[str] = set()
        self._grid = False

    def heading(self, level: int, text: str) -> None:
        anchor = _slug(text, self._slugs)
        if level in (2, 3):
            self.toc.append((level, text, anchor))
        self.md += ["#" * level + " " + text, ""]
        self.html.append(f'<h{level} id="{anchor}">{inline(text)}</h{level}>')

    def para(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{inline(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        if not items:
            return
        self.md += [f"- {item}" for item in items] + [""]
        self.html.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")

    def box(self, kind: str, title: str, items: list[str]) -> None:
        """A call-out: ``kind`` is ``warn`` (amber) or ``note`` (blue)."""
        if not items:
            return
        self.md.append(f"> **{title}**")
        self.md += [f"> - {item}" for item in items] if len(items) > 1 else [f"> {items[0]}"]
        self.md.append("")
        body = ("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>"
                if len(items) > 1 else f"<p>{inline(items[0])}</p>")
        self.html.append(f'<div class="{kind}"><strong>{inline(title)}</strong>{body}</div>')

    def table(self, frame: pd.DataFrame, heading: str | None = None, note: str | None = None,
              small: bool = False) -> None:
        if heading:
            if self._grid:
                self.md += [f"**{heading}**", ""]
                self.html.append(f'<div class="cell"><h4>{inline(heading)}</h4>')
            else:
                self.heading(3, heading)
        md = markdown_table(frame)
        self.md += [md.rstrip("\n"), ""]
        html = md_table_html(md)
        if small:
            html = html.replace('<div class="table-wrap">', '<div class="table-wrap small">', 1)
        self.html.append(html)
        if note:
            self.md += [f"*{note}*", ""]
            self.html.append(f'<p class="tnote">{inline(note)}</p>')
        if heading and self._grid:
            self.html.append("</div>")

    def grid(self, start: bool) -> None:
        """Lay the next tables side by side in HTML (Markdown is unaffected)."""
        self._grid = start
        self.html.append('<div class="grid">' if start else "</div>")

    def figure(self, path: Path | None, caption: str, max_width: int | None = None) -> None:
        if path is None or not Path(path).is_file():
            where = ""
            if path is not None:
                try:
                    where = f" (`{Path(os.path.relpath(path, self.root)).as_posix()}`)"
                except ValueError:
                    where = f" (`{path}`)"
            self.para(f"*{caption}: figure not available{where}.*")
            return
        path = Path(path)
        try:
            rel = Path(os.path.relpath(path, self.root)).as_posix()
        except ValueError:  # another drive
            rel = path.as_posix()
        self.md += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        style = f' style="max-width:{max_width}px"' if max_width else ""
        alt = _html.escape(caption, quote=True)
        self.html.append(f'<figure><img{style} alt="{alt}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{inline(caption)}</figcaption></figure>")

    def markdown(self) -> str:
        return "\n".join(self.md).rstrip("\n") + "\n"

    def page(self, title: str, subtitle: str) -> str:
        toc = ['<nav class="toc"><div class="toc-title">Contents</div><ul>']
        open_sub = False
        for level, text, anchor in self.toc:
            if level == 2:
                if open_sub:
                    toc.append("</ul></li>")
                    open_sub = False
                elif toc[-1].endswith("</a>"):
                    toc.append("</li>")
                toc.append(f'<li><a href="#{anchor}">{inline(text)}</a>')
            else:
                if not open_sub:
                    toc.append("<ul>")
                    open_sub = True
                toc.append(f'<li><a href="#{anchor}">{inline(text)}</a></li>')
        toc.append("</ul></li>" if open_sub else "</li>")
        toc.append("</ul></nav>")
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{inline(title)}</h1>\n<p class=\"subtitle\">{inline(subtitle)}</p>\n"
            + "".join(toc) + "\n" + "\n".join(self.html) + "\n</main>\n</body>\n</html>\n"
        )


_CSS = """
:root { --fg:#1f2933; --muted:#52606d; --line:#d9e2ec; --soft:#f5f7fa; --accent:#2f6f9f; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--fg);
  font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1140px; margin:0 auto; padding:28px 36px 80px; }
h1 { font-size:28px; margin:0 0 2px; }
.subtitle { color:var(--muted); margin:0 0 18px; }
h2 { font-size:22px; margin:46px 0 10px; padding-bottom:5px; border-bottom:2px solid var(--line); }
h3 { font-size:16.5px; margin:28px 0 8px; color:#243b53; }
h4 { font-size:14.5px; margin:14px 0 6px; color:#243b53; }
p { margin:8px 0; } ul { margin:6px 0 10px; padding-left:22px; }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
code { background:#eef2f6; border-radius:3px; padding:1px 5px; font-size:90%;
  font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
nav.toc { background:var(--soft); border:1px solid var(--line); border-radius:6px;
  padding:12px 22px 10px; margin:10px 0 8px; font-size:14px; }
nav.toc .toc-title { font-weight:600; margin-bottom:4px; }
nav.toc > ul { columns:2; column-gap:36px; margin:0; padding-left:18px; }
nav.toc > ul > li { break-inside:avoid; margin-bottom:4px; }
nav.toc ul ul { padding-left:16px; margin:2px 0 4px; color:var(--muted); font-size:13px; }
.table-wrap { overflow-x:auto; margin:6px 0 6px; }
.table-wrap.small table { font-size:12.5px; }
.table-wrap.small th, .table-wrap.small td { padding:3px 8px; }
table { border-collapse:collapse; font-size:14px; font-variant-numeric:tabular-nums; }
th, td { padding:5px 12px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
th { background:var(--soft); font-weight:600; border-bottom:2px solid #bcccdc; }
th.num, td.num { text-align:right; }
tbody tr:nth-child(even) { background:#fafbfc; }
tbody tr:hover { background:#eef4fa; }
.tnote { color:var(--muted); font-size:13.5px; margin:2px 0 14px; }
.grid { display:flex; flex-wrap:wrap; gap:4px 40px; align-items:flex-start; }
.grid .cell { min-width:0; }
figure { margin:12px 0 26px; }
figure img { display:block; max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13.5px; margin-top:5px; }
.warn, .note { border-radius:4px; padding:10px 16px; margin:12px 0 14px; }
.warn { background:#fff7e0; border-left:6px solid #e8a200; }
.note { background:#eef6fc; border-left:6px solid var(--accent); }
.warn p, .note p { margin:4px 0 0; } .warn ul, .note ul { margin:4px 0 0; }
.headline td:first-child { font-weight:600; }
"""
