"""Building blocks of the sections: a section in both renderings, tables, and the writer of
the figure and table files (``figures/``, ``tables/`` beside the report)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import cas
from .figures import FigureStore
from .latex import PaperTable, render_md, render_tex


@dataclass
class Section:
    """One part of the report, rendered for Markdown and for HTML. ``fold``: shown closed
    (a ``<details>``) in the HTML, as the provenance is."""

    title: str
    md: str
    html: str
    fold: bool = False


def md_table(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in body:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def html_table(header: list[str], body: list[list[Any]], sortable: bool = True) -> str:
    """Every cell escaped; a sortable table sorts by a column when its header is clicked."""
    esc = html.escape
    th = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in body)
    cls = ' class="sortable"' if sortable else ""
    return f"<table{cls}><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def table_section(
    title: str, header: list[str], body: list[list[Any]], note: str = "", extra_html: str = ""
) -> Section:
    """A table in both renderings; every cell is escaped in HTML."""
    md = (note + "\n\n" if note else "") + md_table(header, body)
    page = (f"<p>{html.escape(note)}</p>" if note else "") + html_table(header, body)
    return Section(title, md, page + extra_html)


def join(title: str, parts: list[Section], fold: bool = False) -> Section:
    """Sub-parts (titles become ``###`` / ``<h3>`` where given) as one section."""
    md, page = [], []
    for p in parts:
        if p.title:
            md.append(f"### {p.title}")
            page.append(f"<h3>{html.escape(p.title)}</h3>")
        md.append(p.md)
        page.append(p.html)
    return Section(title, "\n\n".join(md), "".join(page), fold)


def _paper_html(t: PaperTable) -> str:
    esc = html.escape
    groups = "".join(
        f'<th colspan="{len(cols)}">{esc(g)}</th>' if g else f'<th colspan="{len(cols)}"></th>'
        for g, cols in t.groups
    )
    heads = f"<th>{esc(t.row_header)}</th>" + "".join(
        f"<th>{esc(c)}</th>" for _, cols in t.groups for c in cols
    )
    body = []
    for (title, rows), best in zip(t.row_groups, t.best(), strict=True):
        if title:
            body.append(f'<tr class="group"><td colspan="{t.n_columns + 1}">{esc(title)}</td></tr>')
        for i, (name, cells) in enumerate(rows):
            tds = [f"<td>{esc(name)}</td>"]
            for j, c in enumerate(cells):
                if c.value is None:
                    tds.append("<td>–</td>")
                    continue
                v = f"{c.value:.2f}"
                v = f"<strong>{v}</strong>" if (i, j) in best else v
                if c.ci is not None:
                    v += f" <small>[{c.ci[0]:.2f}, {c.ci[1]:.2f}]</small>"
                tds.append(f"<td>{v}{'†' if c.dagger else ''}</td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
    sortable = ' class="sortable"' if len(t.row_groups) == 1 else ""
    return (
        f'<table{sortable} id="tab-{esc(t.name)}"><thead><tr><th></th>{groups}</tr>'
        f"<tr>{heads}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


class Output:
    """Writes figures and paper tables beside the report and keeps their names."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.figures = FigureStore(self.out_dir / "figures")
        self.tables: list[str] = []

    def figure(self, name: str, fig: Any, caption: str) -> Section:
        md, page = self.figures.save(name, fig, caption)
        return Section("", md, page)

    def table(self, t: PaperTable) -> Section:
        """Write ``tables/<name>.tex`` / ``.md`` and their ``_ci`` variants (with the 95%
        bootstrap interval); the section shows the table and the LaTeX to copy."""
        if t.name in self.tables:
            raise ValueError(f"table {t.name} written twice")
        files = {}
        for suffix, with_ci in (("", False), ("_ci", True)):
            files[f"{t.name}{suffix}.tex"] = render_tex(t, with_ci)
            files[f"{t.name}{suffix}.md"] = render_md(t, with_ci)
        for name, text in files.items():
            cas.write_text_atomic(self.out_dir / "tables" / name, text)
        self.tables.append(t.name)
        links = ", ".join(f"tables/{n}" for n in files)
        esc = html.escape
        page = (
            f"<p>{esc(render_md(t).splitlines()[0])}</p>{_paper_html(t)}"
            f"<details><summary>LaTeX (booktabs; {esc(links)})</summary>"
            f"<pre>{esc(files[t.name + '.tex'])}</pre>"
            f"<p>With the 95% intervals:</p><pre>{esc(files[t.name + '_ci.tex'])}</pre></details>"
        )
        md = files[f"{t.name}.md"] + f"\nFiles: {links}.\n"
        return Section("", md, page)

    def prune(self) -> None:
        """Remove figure and table files of an earlier run that this run did not write."""
        keep = {
            "figures": {f"{n}.{e}" for n in self.figures.names for e in ("svg", "png")},
            "tables": {
                f"{n}{s}.{e}" for n in self.tables for s in ("", "_ci") for e in ("tex", "md")
            },
        }
        for sub, names in keep.items():
            folder = self.out_dir / sub
            for p in folder.glob("*") if folder.is_dir() else []:
                if p.suffix in (".svg", ".png", ".tex", ".md") and p.name not in names:
                    p.unlink()
