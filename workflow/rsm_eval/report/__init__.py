"""Report stage: metrics records -> CSV, Markdown, one self-contained HTML report, paper-layout
LaTeX/Markdown tables and figures (SVG and PNG), and provenance.

collect (the products read into one model, the only source of the numbers) -> sections (one
function per section, one list owning the order) -> render (Markdown, HTML, LaTeX, figures).
Every row carries the address of what made it; nothing here recomputes a metric, so changing
this package reruns no model.
"""

from .blocks import Output, Section, md_table, table_section
from .collect import (
    CI_COLUMNS,
    CSV_COLUMNS,
    EXTRA_COLUMNS,
    METRICS,
    TIE_COLUMNS,
    TIE_SHOWN_ABOVE,
    Report,
    collect,
    from_paths,
    load_published,
    load_records,
    provenance,
    published_comparison,
    rows,
    tie_bounds,
    to_csv,
    wide_ties_note,
    with_ties,
)
from .render import render, render_paths, write
from .sections import PROTOCOL_NOTE, SECTIONS, build

__all__ = [
    "CI_COLUMNS",
    "CSV_COLUMNS",
    "EXTRA_COLUMNS",
    "METRICS",
    "PROTOCOL_NOTE",
    "SECTIONS",
    "TIE_COLUMNS",
    "TIE_SHOWN_ABOVE",
    "Output",
    "Report",
    "Section",
    "build",
    "collect",
    "from_paths",
    "load_published",
    "load_records",
    "md_table",
    "provenance",
    "published_comparison",
    "render",
    "render_paths",
    "rows",
    "table_section",
    "tie_bounds",
    "to_csv",
    "wide_ties_note",
    "with_ties",
    "write",
]
