"""report.html: one self-contained page (the figures inline as base64): the table, the
search's trials, the failed runs with their errors, every run and the figures."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continual.report.format import as_cell
from continual.report.table import Tables, first_line_of_error

_STYLE = ("<style>body{font-family:sans-serif;margin:2em}"
          ".scroll{overflow-x:auto}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
          "th{background:#f3f3f3}td.best{background:#eef6ee}img{max-width:100%;display:block;margin:1em 0}"
          "pre{background:#f6f6f6;padding:1em;overflow:auto}</style>")


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        c = as_cell(v)
        text = html.escape(c.plain())
        return f"<td class='best'><b>{text}</b></td>" if c.best else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def html_report(t: Tables) -> str:
    """The text of report.html."""
    page = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(t.title)}</title>{_STYLE}</head><body>",
        f"<h1>{html.escape(t.title)}</h1><p>{html.escape(t.intro)}</p>", html_table(t.header, t.shown),
    ]
    if t.search is not None:
        page += ["<h2>Hyper-parameter search</h2>", f"<p>{html.escape(t.search_text)}</p>",
                 html_table(t.trial_header, t.trials)]
    if t.not_ok:
        errors = "".join(
            f"<details><summary>{html.escape(t.rel(r.path))}: "
            f"{html.escape(first_line_of_error(r.error))}</summary>"
            f"<pre>{html.escape(r.error)}</pre></details>" for r in t.not_ok if r.error)
        page += ["<h2>Failed or unfinished runs</h2>", html_table(t.bad_header, t.bad_rows), errors]
    page += ["<h2>Runs</h2>", html_table(t.run_header, t.run_rows)]
    if t.figures:
        page += ["<h2>Plots</h2>"]
        for p in t.figures:
            mime, data = t.embedded[p]
            page.append(f"<img src='data:{mime};base64,{base64.b64encode(data).decode('ascii')}' "
                        f"alt='{html.escape(p.stem)}' title='{html.escape(t.rel(p))}'>")
    page.append("</body></html>")
    return "\n".join(page)


def write_html(t: Tables) -> Path:
    """Write report.html; returns its path."""
    path = t.out_dir / "report.html"
    path.write_text(html_report(t))
    return path
