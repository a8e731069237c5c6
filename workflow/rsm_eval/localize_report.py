"""The report's semantic-localization section, from the localize stage's records alone.

Self-contained (it takes the records and the report's directory, and returns a report
`Section`): overall Rsu / Ras / Rda / Rmi with bootstrap intervals, published versus
reproduced (data/published_localization.csv, never mixed with the retrieval rows), the
per-query table, and the heat maps the stage drew (embedded in the HTML as data URIs).
"""

from __future__ import annotations

import base64
import csv
import html
import os
from pathlib import Path
from typing import Any

from .report import Section, table_section

PUBLISHED_PATH = Path(__file__).resolve().parent / "data" / "published_localization.csv"
METRICS = ("rsu", "ras", "rda", "rmi")
NAMES = {"rsu": "Rsu ↑", "ras": "Ras ↓", "rda": "Rda ↑", "rmi": "Rmi ↑"}


def load_published(path: Path = PUBLISHED_PATH) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for m in METRICS:
            r[m] = float(r[m])
    return rows


def published_rows(record: dict[str, Any], published: list[dict[str, Any]]) -> list[dict]:
    """Published rows for the record's model: same name (or "<name> (authors)"), same
    dataset, and the same backbone where the source states one."""
    key = record.get("model_published") or {}
    if not key:
        return []
    names = {key["model"], f"{key['model']} (authors)"}
    ds = record.get("dataset_published") or record["dataset"]
    return [
        p
        for p in published
        if p["model"] in names
        and p["dataset"] == ds
        and (not p["backbone"] or p["backbone"] == key.get("backbone"))
    ]


def _ci(s: dict[str, Any]) -> str:
    if s.get("ci_low") is None:
        return f"{s['mean']:.4f}"
    return f"{s['mean']:.4f} [{s['ci_low']:.4f}, {s['ci_high']:.4f}]"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def localization_section(records: list[dict[str, Any]], out_dir: Path | None = None) -> Section:
    records = sorted(records, key=lambda r: (r["dataset"], r["model"]))
    level = records[0]["bootstrap"]["level"] if records else 0.95
    header = ["model", "dataset", "queries", "scenes", "windows"] + [NAMES[m] for m in METRICS]
    body = [
        [r["model"], r["dataset"], r["counts"]["queries"], r["counts"]["images"], r["windows"]]
        + [_ci(r["metrics"][m]) for m in METRICS]
        for r in records
    ]
    note = (
        "Semantic localization (Yuan et al., TGRS 2022; SemanticLocalizationMetrics' "
        "generate_selo.py and SLM.py, as GeoRSCLIP runs them): windows of "
        f"{', '.join(map(str, records[0]['params']['windows'])) if records else ''} px on two "
        "grids each, crops resized to 256 and embedded once per model (feature store), each "
        "pixel the mean cosine of its windows, min-max normalised, median blur 251. Means over "
        f"queries with {level:.0%} percentile bootstrap intervals over queries."
    )
    overall = table_section("Semantic localization", header, body, note)

    published = load_published()
    pub_header = ["model", "dataset", "published as", "source"] + [
        f"{NAMES[m]} ours / published / diff" for m in METRICS
    ]
    pub_body = []
    for r in records:
        for p in published_rows(r, published):
            cells = []
            for m in METRICS:
                ours = r["metrics"][m]["mean"]
                cells.append(f"{ours:.4f} / {p[m]:.4f} / {ours - p[m]:+.4f}")
            label = f"{p['model']} {p['backbone']}".strip()
            pub_body.append([r["model"], r["dataset"], label, p["source"]] + cells)
    pub_note = (
        "Published rows: data/published_localization.csv (RSM-CLIP Table 3; the RS5M README "
        "for GeoRSCLIP ViT-B-32)."
    )
    if not pub_body:
        pub_note += " No evaluated model has a published localization row."
    compared = table_section("Published versus reproduced", pub_header, pub_body, pub_note)

    q_header = ["model", "query", "scene", "caption", "regions", "centres"] + [
        NAMES[m] for m in METRICS
    ]
    q_body = [
        [r["model"], q["query"], q["image"], q["caption"], q["n_regions"], len(q["centres"])]
        + [f"{q[m]:.4f}" for m in METRICS]
        for r in records
        for q in r["queries"]
    ]
    per_query = table_section("Per query", q_header, q_body)

    figs_md, figs_html = [], []
    for r in records:
        captions = {q["query"]: q for q in r["queries"]}
        for f in r.get("figures", []):
            path = Path(r["figures_dir"]) / f["file"]
            if not path.is_file():
                continue
            q = captions[f["query"]]
            text = (
                f"{r['model']}, query {q['query']} ({q['image']}): {q['caption']} — "
                f"Rsu {q['rsu']:.3f}, Ras {q['ras']:.3f}, Rda {q['rda']:.3f}, Rmi {q['rmi']:.3f}"
            )
            rel = os.path.relpath(path, out_dir) if out_dir is not None else str(path)
            figs_md.append(f"![{text}]({rel})\n\n{text}\n")
            figs_html.append(
                f'<figure style="display:inline-block;margin:6px;max-width:460px">'
                f'<img src="{_data_uri(path)}" alt="heat map" style="max-width:100%">'
                f'<figcaption style="font-size:12px">{html.escape(text)}</figcaption></figure>'
            )
    fig_note = (
        "Heat maps over their scenes (JET, 0.3 over the image): annotated polygons in green, "
        "each region's circle (1.5 x mean vertex distance) in yellow, predicted centres as "
        "white crosses."
    )
    md = "\n\n".join(
        [
            overall.md,
            "### Published versus reproduced\n\n" + compared.md,
            "### Heat maps\n\n" + fig_note + "\n\n" + "\n".join(figs_md),
            "### Per query\n\n" + per_query.md,
        ]
    )
    page = (
        overall.html
        + "<h3>Published versus reproduced</h3>"
        + compared.html
        + f"<h3>Heat maps</h3><p>{html.escape(fig_note)}</p>"
        + "".join(figs_html)
        + "<details><summary>Per query</summary>"
        + per_query.html
        + "</details>"
    )
    return Section("Semantic localization", md, page)
