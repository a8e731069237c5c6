"""Assemble the sections into report.md and one self-contained report.html, and write the
CSV, provenance, figure and table files (each atomically)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from .. import cas
from .blocks import Output, Section
from .collect import Report, collect, from_paths, to_csv
from .sections import build

TITLE = "RSM-Eval retrieval report"
CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;word-break:break-word}
th{background:#f4f4f4}
table.sortable thead tr:last-child th{cursor:pointer}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
tr.group td{font-style:italic;background:#fafafa}
figure.fig{margin:1em 0}figure.fig svg{max-width:100%;height:auto}
figcaption{font-size:12px;color:#444}
figure.thumbs{display:inline-block;margin:4px}figure.thumbs figcaption{font-size:11px}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:12px}
nav li{margin:2px 0}
"""
# Click a column header of a sortable table to sort by it (numbers numerically).
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  var heads = t.tHead.rows[t.tHead.rows.length - 1].cells;
  Array.prototype.forEach.call(heads, function (th, i) {
    th.tabIndex = 0;
    th.addEventListener("click", function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      function key(r) {
        var s = r.cells[i] ? r.cells[i].textContent.trim() : "";
        var n = parseFloat(s);
        return isNaN(n) ? s : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var c = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y));
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
# Nothing may be fetched: the page is one file (and opens inside Snakemake's report zip).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def anchor(title: str, used: set[str]) -> str:
    base = "s-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section")
    name, i = base, 2
    while name in used:
        name, i = f"{base}-{i}", i + 1
    used.add(name)
    return name


def page(sections: list[Section]) -> str:
    esc = html.escape
    used: set[str] = set()
    ids = [anchor(s.title, used) for s in sections]
    toc = "".join(
        f'<li><a href="#{i}">{esc(s.title)}</a></li>' for s, i in zip(sections, ids, strict=True)
    )
    body = []
    for s, i in zip(sections, ids, strict=True):
        inner = f"<details><summary>Show</summary>{s.html}</details>" if s.fold else s.html
        body.append(f'<section id="{i}"><h2>{esc(s.title)}</h2>{inner}</section>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE}</title><style>{CSS}</style></head><body><h1>{TITLE}</h1>
<nav><h2>Contents</h2><ol>{toc}</ol></nav>
{"".join(body)}
<script>{SORT_JS}</script></body></html>
"""


def markdown(sections: list[Section]) -> str:
    toc = [f"{n}. {s.title}" for n, s in enumerate(sections, 1)]
    parts = [f"# {TITLE}", "", *toc, ""] + [f"## {s.title}\n\n{s.md}\n" for s in sections]
    return "\n".join(parts)


def write(rep: Report, out_dir: Path) -> dict:
    """Every output of the report stage from the collected model."""
    out_dir = Path(out_dir)
    out = Output(out_dir)
    sections = build(rep, out)
    out.prune()
    paths = {
        "csv": out_dir / "retrieval.csv",
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
        "provenance": out_dir / "provenance.json",
        "figures": out_dir / "figures",
        "tables": out_dir / "tables",
    }
    prov = dict(rep.provenance, published_comparison=rep.compared)
    prov["figures"] = sorted(out.figures.names)
    prov["tables"] = sorted(out.tables)
    cas.write_text_atomic(paths["csv"], to_csv(rep.table))
    cas.write_text_atomic(paths["md"], markdown(sections))
    cas.write_text_atomic(paths["html"], page(sections))
    cas.write_json_atomic(paths["provenance"], prov)
    for key in ("figures", "tables"):
        paths[key].mkdir(parents=True, exist_ok=True)  # present even when empty (rule output)
    return paths


def render(
    records: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    out_dir: Path,
    workflow_root: Path,
    published_keys: dict[str, Any] | None = None,
    tolerance: float = 1.0,
    paired: list[dict[str, Any]] | None = None,
    **products: Any,
) -> dict[str, Path]:
    """The report from loaded records (the products' other parts as keyword arguments)."""
    rep = collect(
        records,
        summaries,
        Path(workflow_root),
        published_keys=published_keys,
        tolerance=tolerance,
        paired=paired or [],
        **products,
    )
    return write(rep, out_dir)


def render_paths(out_dir: Path, **paths: Any):
    """The report from the products' files (the report stage's command line)."""
    return write(from_paths(**paths), out_dir)
