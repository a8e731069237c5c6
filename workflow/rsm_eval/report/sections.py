"""The report's sections, one function each; :data:`SECTIONS` owns their order.

A section function takes the :class:`~.collect.Report` and the :class:`~.blocks.Output`
(which writes figures and tables) and returns a :class:`~.blocks.Section`, a list of them, or
None when its products are absent (then nothing is shown). Adding a section is one function
and one entry in :data:`SECTIONS`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from . import figures
from .blocks import Output, Section, join, table_section
from .collect import (
    CSV_COLUMNS,
    METRICS,
    PUBLISHED_PROTOCOL,
    Report,
    wide_ties_note,
    with_ties,
)
from .sections_tasks import classification, finetuning, leakage, localization, scenes
from .tables import all_tables, protocol_text

PROTOCOL_NOTE = (
    "Protocol (remoteclip rows): RemoteCLIP's retrieval.py as used for RSM-CLIP (test split; "
    "images ordered by file name; each caption has exactly one positive, its own image; "
    "image-to-text R@k is averaged over images, text-to-image over captions; mean recall = "
    "mean of the six; percent, 2 decimals), fp32 without autocast. skyscript rows use "
    "SkyScript's protocol (de-duplicated captions prefixed 'a satellite image. ', every image "
    "carrying a caption's exact string is a positive) and are not comparable with published "
    "tables. Ties: equal scores rank the item earlier in protocol order first. Every other "
    "order of exactly tied scores (identical captions or images) is as legitimate: "
    "'(ties a-b)' after a value is the range of that metric over all such orders, shown "
    "where it is wider than 0.01; every metric's range is in retrieval.csv "
    "(<metric>_tie_low, <metric>_tie_high)."
)
SectionFn = Callable[[Report, Output], "Section | list[Section] | None"]


def _level(rep: Report) -> str:
    with_ci = [r for r in rep.records if r.get("ci")]
    if not with_ci:
        return ""
    r = with_ci[0]
    return f"{r.get('ci_level', 0.95):.0%} bootstrap interval, {r.get('n_resamples')} resamples"


def retrieval(rep: Report, out: Output) -> Section | None:
    if not rep.table:
        return None
    header = list(CSV_COLUMNS) + ["protocol"]
    body = [
        [r["variant"] if k == "protocol" else (with_ties(r, k) if k in METRICS else r[k])
         for k in header]
        for r in rep.table
    ]  # fmt: skip
    parts = [table_section("", header, body, PROTOCOL_NOTE + wide_ties_note(rep.table))]
    level = _level(rep)
    for dataset in rep.datasets():
        for variant in sorted({r["variant"] for r in rep.table if r["dataset"] == dataset}):
            rows = rep.rows_for(dataset, variant)
            first = rows[0]
            title = (
                f"{dataset} ({first['split']}, {first['n_images']} images, "
                f"{first['n_captions']} captions): {protocol_text(variant)}"
                + (f"; band: {level}" if level else "")
            )
            name = f"recall_at_k_{dataset}" + (
                "" if variant == PUBLISHED_PROTOCOL else f"_{variant}"
            )
            parts.append(
                out.figure(
                    name,
                    figures.recall_at_k_figure(rows, title),
                    f"Recall@k on {dataset}, {variant} protocol, per model"
                    + (f" ({level} as a band)" if level else "")
                    + "; a thick bar is the range over orders of tied scores.",
                )
            )
    published = [r for r in rep.table if r["variant"] == PUBLISHED_PROTOCOL]
    if published:
        models = sorted({r["model"] for r in published})
        datasets = sorted({r["dataset"] for r in published})
        values = np.full((len(models), len(datasets)), np.nan)
        for r in published:
            values[models.index(r["model"]), datasets.index(r["dataset"])] = r["mean_recall"]
        parts.append(
            out.figure(
                "mean_recall_heatmap",
                figures.heatmap_figure(
                    values,
                    models,
                    datasets,
                    "Mean recall (%) per model and test set, RemoteCLIP/RSM-CLIP protocol (fp32)",
                    "mean recall (%)",
                    xlabel="test set",
                    ylabel="model",
                ),
                "Mean recall per model and test set (RemoteCLIP/RSM-CLIP protocol; blank: "
                "not evaluated).",
            )
        )
    return join("Retrieval", parts)


def paper_tables(rep: Report, out: Output) -> Section | None:
    tables = all_tables(rep)
    if not tables:
        return None
    note = Section(
        "",
        "Each table is in results/report/tables/ as LaTeX (booktabs; `_ci` adds the 95% "
        "bootstrap interval) and Markdown, with the numbers of retrieval.csv.",
        "<p>Each table is in <code>results/report/tables/</code> as LaTeX (booktabs; "
        "<code>_ci</code> adds the 95% bootstrap interval) and Markdown, with the numbers of "
        "retrieval.csv. Open “LaTeX” under a table to copy it.</p>",
    )
    return join("Paper tables", [note] + [out.table(t) for t in tables])


def published(rep: Report, out: Output) -> Section | None:
    if not rep.table:
        return None
    tolerance = rep.tolerance
    header = ["model", "dataset", "published as", "metric", "ours", "published", "diff",
              "ours over tie orders", ""]  # fmt: skip
    body = []
    for c in rep.compared:
        for m in c["diff"]:
            lo, hi = c["tie_interval"][m]
            body.append(
                [c["model"], c["dataset"], c["published_as"], m, f"{c['ours'][m]:.2f}",
                 f"{c['published'][m]:.2f}", f"{c['diff'][m]:+.2f}", f"{lo:.2f}-{hi:.2f}",
                 f"outside by > {tolerance:g}" if m in c["flagged"] else ""]
            )  # fmt: skip
    note = (
        "A published number matches when it lies within our tie interval (the range over "
        f"all orders of exactly tied scores) widened by {tolerance:g} points "
        "(published_tolerance in config); other rows are flagged. Sources: RSM-CLIP "
        "(ICONIP 2024) Tables 1-2, "
        "RemoteCLIP and GeoRSCLIP papers (workflow/rsm_eval/data/published.csv)."
    )
    if rep.unmatched:
        note += " No published row for: " + "; ".join(rep.unmatched) + "."
    if not rep.compared:
        return Section("Published versus reproduced", note, f"<p>{html.escape(note)}</p>")
    parts = [table_section("", header, body, note)]
    for regime in sorted({c["regime"] for c in rep.compared}):
        sel = [c for c in rep.compared if c["regime"] == regime]
        parts.append(
            out.figure(
                f"published_vs_reproduced_{regime}",
                figures.published_figure(
                    sel,
                    tolerance,
                    f"Published ({regime}) versus reproduced, RemoteCLIP/RSM-CLIP protocol; "
                    "thin bar: 95% bootstrap interval, thick: tie interval",
                ),
                f"Published versus reproduced ({regime} rows): one point per model, test set "
                "and metric; the grey band is the tolerance.",
            )
        )
    return join("Published versus reproduced", parts)


def statistics(rep: Report, out: Output) -> Section | None:
    parts = []
    with_ci = [r for r in rep.records if r.get("ci")]
    if with_ci:
        level = with_ci[0].get("ci_level", 0.95)
        header = ["model", "dataset", "i2t_r1", "t2i_r1", "mean_recall"]
        body = [
            [r["model"], r["dataset"]]
            + [f"{row[m]:.2f} [{row[f'{m}_ci_low']:.2f}, {row[f'{m}_ci_high']:.2f}]"
               for m in header[2:]]
            for r, row in zip(rep.records, rep.table, strict=True)
            if r.get("ci")
        ]  # fmt: skip
        note = (
            f"{level:.0%} bootstrap intervals ({with_ci[0].get('n_resamples')} resamples "
            "of test images, each with its captions; seed in config). All metrics' "
            "intervals are in retrieval.csv."
        )
        parts.append(table_section("", header, body, note))
        ceil: dict[str, Any] = {}
        for r in with_ci:
            ceil.setdefault(r["dataset"], r.get("ceilings", {}))
        body = [
            [d, f"{c.get('t2i_r1', 100):.2f}", f"{c.get('i2t_r1', 100):.2f}"]
            for d, c in sorted(ceil.items())
        ]
        header = ["dataset", "best reachable t2i_r1", "best reachable i2t_r1"]
        note = (
            "Caption-duplication ceiling: the best R@1 any model can reach when identical "
            "captions (or identical images) belong to different test images, under the "
            "protocol's tie rule."
        )
        parts.append(table_section("", header, body, note))
    if rep.paired:
        header = ["dataset", "model A", "model B", "metric", "A - B", "interval", "p",
                  "larger than the noise?"]  # fmt: skip
        body = [
            [p["dataset"], p["a"], p["b"], p["metric"], f"{p['diff']:+.2f}",
             f"[{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]", f"{p['p_value']:.3f}",
             "yes" if p["ci"][0] > 0 or p["ci"][1] < 0 else "no"]
            for p in rep.paired
        ]  # fmt: skip
        note = (
            "Paired bootstrap (the same image resamples for both models): a difference "
            "is larger than the noise when its interval excludes 0."
        )
        parts.append(table_section("", header, body, note))
        n = rep.paired[0].get("n_resamples")
        parts.append(
            out.figure(
                "paired_differences",
                figures.forest_figure(
                    rep.paired,
                    f"Paired bootstrap between models on the same test split ({n} resamples), "
                    "RemoteCLIP/RSM-CLIP protocol; filled: interval excludes 0",
                ),
                "Paired-bootstrap differences between models (A − B) with their 95% intervals.",
            )
        )
    if not parts:
        return Section("Statistics", "No published-protocol rows.", "<p>No rows.</p>")
    return join("Statistics", parts)


def datasets(rep: Report, out: Output) -> Section | None:
    if not rep.summaries:
        return None
    header = ["dataset", "split", "images", "captions", "distinct captions"]
    body = [
        [s["dataset"], split, c["images"], c["captions"], c["distinct_captions"]]
        for s in rep.summaries
        for split, c in s["counts"].items()
    ]
    quirks = "; ".join(
        f"{s['dataset']}: " + ", ".join(f"{k} = {v}" for k, v in s["quirks"].items())
        for s in rep.summaries
        if s.get("quirks")
    )
    note = "Validation: every referenced image exists and decodes; counts per split below."
    if quirks:
        note += f" Quirks counted (not fatal): {quirks}."
    return table_section("Datasets", header, body, note)


def provenance(rep: Report, out: Output) -> Section:
    prov = rep.provenance
    header = ["model", "dataset", "row address", "weights", "manifest sha256",
              "image features sha256", "text features sha256"]  # fmt: skip
    body = [
        [e["model"], e["dataset"], e["row_address"], json.dumps(e["weights"], sort_keys=True),
         e["manifest_sha256"], e["image_features_sha256"], e["text_features_sha256"]]
        for e in prov["rows"]
    ]  # fmt: skip
    note = (
        f"git commit: {prov['git_commit']}. Packages: "
        + ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
        + "."
    )
    s = table_section("Provenance", header, body, note)
    s.fold = True
    return s


SECTIONS: list[SectionFn] = [
    retrieval,
    paper_tables,
    published,
    statistics,
    finetuning,
    leakage,
    classification,
    localization,
    scenes,
    datasets,
    provenance,
]


def build(rep: Report, out: Output) -> list[Section]:
    """Every section in :data:`SECTIONS` order, leaving out those without products."""
    sections: list[Section] = []
    for fn in SECTIONS:
        got = fn(rep, out)
        if got is None:
            continue
        sections += got if isinstance(got, list) else [got]
    return sections
