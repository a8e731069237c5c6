"""Report stage: metrics records -> CSV, Markdown and a self-contained HTML report.

Every row carries the address of what made it; the provenance section lists the content
hash of each checkpoint, manifest and feature file behind each row, the package versions
and the git commit. Nothing here recomputes a metric: it only reads the evaluate stage's
records, so changing this module reruns no model.
"""

from __future__ import annotations

import csv
import html
import io
import json
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import cas
from .errors import RsmEvalError

# The contract other tools rely on: these first columns, in this order; later ones may follow.
CSV_COLUMNS = (
    "model",
    "dataset",
    "split",
    "n_images",
    "n_captions",
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "mean_recall",
)
METRICS = CSV_COLUMNS[5:]
CI_COLUMNS = tuple(f"{m}_ci_{end}" for m in METRICS for end in ("low", "high"))
# Each metric's lowest and highest value over all orders of exactly tied scores.
TIE_COLUMNS = tuple(f"{m}_tie_{end}" for m in METRICS for end in ("low", "high"))
TIE_SHOWN_ABOVE = 0.01  # a tie interval wider than this is shown beside the value
EXTRA_COLUMNS = (
    "protocol",
    "n_distinct_captions",
    *CI_COLUMNS,
    "address",
    "model_address",
    "manifest_address",
    *TIE_COLUMNS,
)
PACKAGES = (
    "rsm-eval",
    "snakemake",
    "open_clip_torch",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "clip_benchmark",
)


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    records = []
    for p in paths:
        try:
            rec = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RsmEvalError(f"{p}: unreadable metrics record ({exc})") from None
        missing = [k for k in ("model", "dataset", "split", "metrics", "address") if k not in rec]
        if missing:
            raise RsmEvalError(f"{p}: metrics record lacks {missing}")
        records.append(rec)
    return sorted(records, key=lambda r: (r["dataset"], r["model"], r.get("protocol", "")))


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        row = {k: r.get(k) for k in CSV_COLUMNS[:5]}
        row.update({k: round(r["metrics"][k], 2) for k in METRICS})
        ci = r.get("ci", {})
        for m in METRICS:
            low, high = ci.get(m, (None, None))
            row[f"{m}_ci_low"] = None if low is None else round(low, 2)
            row[f"{m}_ci_high"] = None if high is None else round(high, 2)
        row.update(
            protocol=r.get("protocol", "remoteclip"),
            n_distinct_captions=r.get("n_distinct_captions"),
            address=r["address"],
            model_address=r["inputs"]["model_address"],
            manifest_address=r["inputs"]["manifest_address"],
        )
        ties = r.get("tie_interval", {})
        for m in METRICS:
            low, high = ties.get(m, (None, None))
            row[f"{m}_tie_low"] = None if low is None else round(low, 2)
            row[f"{m}_tie_high"] = None if high is None else round(high, 2)
        out.append(row)
    return out


def tie_bounds(row: dict[str, Any], m: str) -> tuple[float, float]:
    """A row's tie interval of metric ``m`` (the value itself when the record has none)."""
    low, high = row.get(f"{m}_tie_low"), row.get(f"{m}_tie_high")
    return (row[m], row[m]) if low is None or high is None else (low, high)


def with_ties(row: dict[str, Any], m: str) -> str:
    """The value, followed by its tie interval where that is wider than TIE_SHOWN_ABOVE."""
    low, high = tie_bounds(row, m)
    text = f"{row[m]:.2f}"
    return text + (
        f" (ties {low:.2f}-{high:.2f})" if round(high - low, 2) > TIE_SHOWN_ABOVE else ""
    )


def wide_ties_note(table: list[dict[str, Any]]) -> str:
    """Names the metrics whose tie interval is wider than TIE_SHOWN_ABOVE, per row."""
    wide = []
    for row in table:
        ms = [m for m in METRICS if with_ties(row, m) != f"{row[m]:.2f}"]
        if ms:
            wide.append(f"{row['model']} / {row['dataset']} ({row['protocol']}): {', '.join(ms)}")
    if not wide:
        return f" No tie interval is wider than {TIE_SHOWN_ABOVE:g}."
    return f" Tie intervals wider than {TIE_SHOWN_ABOVE:g}: " + "; ".join(wide) + "."


def to_csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + EXTRA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow(
            {
                k: (f"{v:.2f}" if k in METRICS + CI_COLUMNS + TIE_COLUMNS and v is not None else v)
                for k, v in row.items()
            }
        )
    return buf.getvalue()


def _md_table(header: list[str], body: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in body:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git(root: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def provenance(
    records: list[dict[str, Any]], summaries: list[dict[str, Any]], workflow_root: Path
) -> dict[str, Any]:
    entries = []
    for r in records:
        spec = r["inputs"].get("model_spec") or {}
        entries.append(
            {
                "model": r["model"],
                "dataset": r["dataset"],
                "row_address": r["address"],
                "weights": spec.get("weights"),
                "arch": spec.get("arch"),
                "force_quick_gelu": spec.get("force_quick_gelu"),
                "model_address": r["inputs"]["model_address"],
                "manifest_address": r["inputs"]["manifest_address"],
                "manifest_sha256": r["inputs"].get("manifest_sha256"),
                "image_features_sha256": r["inputs"]["image_features_sha256"],
                "text_features_sha256": r["inputs"]["text_features_sha256"],
                "code": r.get("code"),
            }
        )
    return {
        "rows": entries,
        "datasets": {
            s["dataset"]: {
                "address": s.get("address"),
                "annotations_sha256": s.get("annotations_sha256"),
            }
            for s in summaries
        },
        "packages": _versions(),
        "git_commit": _git(workflow_root),
    }


def _svg_chart(table: list[dict[str, Any]]) -> str:
    """Grouped bars of R@1/5/10 per direction, one group per model x dataset; inline SVG."""
    if not table:
        return ""
    colors = ["#1f77b4", "#6baed6", "#c6dbef", "#d62728", "#fc9272", "#fee0d2"]
    bar, gap, height, top = 10, 22, 200, 20
    width = max(60 + len(table) * (6 * bar + gap), 50 + 6 * 70 + 40)  # room for the legend
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 110}" '
        'role="img" aria-label="recall at k per model and dataset">'
    ]
    for pct in (0, 25, 50, 75, 100):
        y = top + height - pct / 100 * height
        parts.append(
            f'<line x1="40" x2="{width}" y1="{y}" y2="{y}" stroke="#ddd"/>'
            f'<text x="35" y="{y + 4}" font-size="10" text-anchor="end">{pct}</text>'
        )
    for g, row in enumerate(table):
        x0 = 50 + g * (6 * bar + gap)
        for j, m in enumerate(METRICS[:6]):
            h = row[m] / 100 * height
            parts.append(
                f'<rect x="{x0 + j * bar}" y="{top + height - h:.1f}" width="{bar - 1}" '
                f'height="{h:.1f}" fill="{colors[j]}"><title>{html.escape(row["model"])} '
                f"{html.escape(row['dataset'])} {m} = {row[m]:.2f}</title></rect>"
            )
        label = html.escape(f"{row['model']} / {row['dataset']}")
        parts.append(
            f'<text x="{x0}" y="{top + height + 12}" font-size="10" '
            f'transform="rotate(30 {x0} {top + height + 12})">{label}</text>'
        )
    for j, m in enumerate(METRICS[:6]):
        parts.append(
            f'<rect x="{50 + j * 70}" y="{height + 95}" width="10" height="10" '
            f'fill="{colors[j]}"/><text x="{64 + j * 70}" y="{height + 104}" '
            f'font-size="10">{m}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


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
PUBLISHED_PATH = Path(__file__).resolve().parent / "data" / "published.csv"


@dataclass
class Section:
    """One part of the report, rendered for Markdown and for HTML."""

    title: str
    md: str
    html: str


def table_section(
    title: str, header: list[str], body: list[list[Any]], note: str = "", extra_html: str = ""
) -> Section:
    """A table in both renderings; every cell is escaped in HTML."""
    esc = html.escape
    th = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    trs = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in body)
    md = (note + "\n\n" if note else "") + _md_table(header, body)
    page = (f"<p>{esc(note)}</p>" if note else "") + f"<table><tr>{th}</tr>{trs}</table>"
    return Section(title, md, page + extra_html)


def load_published(path: Path = PUBLISHED_PATH) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows_ = list(csv.DictReader(fh))
    for r in rows_:
        for m in METRICS:
            r[m] = float(r[m]) if r[m] else None
    return rows_


def published_comparison(
    table: list[dict[str, Any]], keys: dict[str, Any], tolerance: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Reproduced rows beside the published ones for the same model, backbone, regime,
    dataset and protocol; Table 1 (zero-shot) and Table 2 (RET-3) rows are never mixed.

    Returns the compared rows and the (model, dataset) pairs with no published row.
    """
    published = load_published()
    models = keys.get("models", {})
    datasets = keys.get("datasets", {})
    compared, unmatched = [], []
    for row in table:
        key = models.get(row["model"])
        ds = datasets.get(row["dataset"], row["dataset"])
        hits = [
            p
            for p in published
            if key
            and p["model"] == key["model"]
            and p["backbone"] == key["backbone"]
            and p["regime"] == key["regime"]
            and p["dataset"] == ds
            and p["protocol"] == row["protocol"]
        ]
        if not hits:
            unmatched.append(f"{row['model']} / {row['dataset']} ({row['protocol']})")
            continue
        for pub in hits:
            diffs = {m: round(row[m] - pub[m], 2) for m in METRICS if pub[m] is not None}
            ties = {m: tie_bounds(row, m) for m in diffs}
            # A match: the published number within the tie interval widened by tolerance.
            outside = {
                m: max(round(lo - pub[m], 2), round(pub[m] - hi, 2)) for m, (lo, hi) in ties.items()
            }
            compared.append(
                {
                    "model": row["model"],
                    "dataset": row["dataset"],
                    "published_as": f"{pub['model']} {pub['backbone']} ({pub['regime']})",
                    "source": pub["source"],
                    "ours": {m: row[m] for m in diffs},
                    "published": {m: pub[m] for m in diffs},
                    "diff": diffs,
                    "tie_interval": {m: list(b) for m, b in ties.items()},
                    "flagged": sorted(m for m, d in outside.items() if d > tolerance),
                }
            )
    return compared, unmatched


def _published_section(compared, unmatched, tolerance: float) -> Section:
    header = [
        "model",
        "dataset",
        "published as",
        "metric",
        "ours",
        "published",
        "diff",
        "ours over tie orders",
        "",
    ]
    body = []
    for c in compared:
        for m in c["diff"]:
            flag = f"outside by > {tolerance:g}" if m in c["flagged"] else ""
            lo, hi = c.get("tie_interval", {}).get(m, (c["ours"][m], c["ours"][m]))
            body.append(
                [
                    c["model"],
                    c["dataset"],
                    c["published_as"],
                    m,
                    f"{c['ours'][m]:.2f}",
                    f"{c['published'][m]:.2f}",
                    f"{c['diff'][m]:+.2f}",
                    f"{lo:.2f}-{hi:.2f}",
                    flag,
                ]
            )
    note = (
        "A published number matches when it lies within our tie interval (the range over "
        f"all orders of exactly tied scores) widened by {tolerance:g} points "
        "(published_tolerance in config); other rows are flagged. Sources: RSM-CLIP "
        "(ICONIP 2024) Tables 1-2, "
        "RemoteCLIP and GeoRSCLIP papers (workflow/rsm_eval/data/published.csv)."
    )
    if unmatched:
        note += " No published row for: " + "; ".join(unmatched) + "."
    if not compared:
        return Section("Published versus reproduced", note, f"<p>{html.escape(note)}</p>")
    return table_section("Published versus reproduced", header, body, note)


def _dataset_section(summaries: list[dict[str, Any]]) -> Section:
    header = ["dataset", "split", "images", "captions", "distinct captions"]
    body = [
        [s["dataset"], split, c["images"], c["captions"], c["distinct_captions"]]
        for s in summaries
        for split, c in s["counts"].items()
    ]
    quirks = "; ".join(
        f"{s['dataset']}: " + ", ".join(f"{k} = {v}" for k, v in s["quirks"].items())
        for s in summaries
        if s.get("quirks")
    )
    note = "Validation: every referenced image exists and decodes; counts per split below."
    if quirks:
        note += f" Quirks counted (not fatal): {quirks}."
    return table_section("Datasets", header, body, note)


def _statistics_section(records: list[dict[str, Any]], paired: list[dict[str, Any]]) -> Section:
    parts_md, parts_html = [], []
    with_ci = [r for r in records if r.get("ci")]
    if with_ci:
        level = with_ci[0].get("ci_level", 0.95)
        header = ["model", "dataset", "i2t_r1", "t2i_r1", "mean_recall"]
        body = [
            [r["model"], r["dataset"]]
            + [
                f"{r['metrics'][m]:.2f} [{r['ci'][m][0]:.2f}, {r['ci'][m][1]:.2f}]"
                for m in header[2:]
            ]
            for r in with_ci
        ]
        note = (
            f"{level:.0%} bootstrap intervals ({with_ci[0].get('n_resamples')} resamples of "
            "test images, each with its captions; seed in config). All metrics' intervals "
            "are in retrieval.csv."
        )
        t = table_section("", header, body, note)
        parts_md.append(t.md)
        parts_html.append(t.html)
        ceil = {}
        for r in with_ci:
            ceil.setdefault(r["dataset"], r.get("ceilings", {}))
        header = ["dataset", "best reachable t2i_r1", "best reachable i2t_r1"]
        body = [
            [d, f"{c.get('t2i_r1', 100):.2f}", f"{c.get('i2t_r1', 100):.2f}"]
            for d, c in sorted(ceil.items())
        ]
        t = table_section(
            "",
            header,
            body,
            "Caption-duplication ceiling: the best R@1 any "
            "model can reach when identical captions (or identical images) "
            "belong to different test images, under the protocol's tie rule.",
        )
        parts_md.append(t.md)
        parts_html.append(t.html)
    if paired:
        header = [
            "dataset",
            "model A",
            "model B",
            "metric",
            "A - B",
            "interval",
            "p",
            "larger than the noise?",
        ]
        body = [
            [
                p["dataset"],
                p["a"],
                p["b"],
                p["metric"],
                f"{p['diff']:+.2f}",
                f"[{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]",
                f"{p['p_value']:.3f}",
                "yes" if p["ci"][0] > 0 or p["ci"][1] < 0 else "no",
            ]
            for p in paired
        ]
        t = table_section(
            "",
            header,
            body,
            "Paired bootstrap (the same image resamples for "
            "both models): a difference is larger than the noise when its "
            "interval excludes 0.",
        )
        parts_md.append(t.md)
        parts_html.append(t.html)
    if not parts_md:
        return Section("Statistics", "No published-protocol rows.", "<p>No rows.</p>")
    return Section("Statistics", "\n\n".join(parts_md), "".join(parts_html))


MAX_PAIRS_SHOWN = 60


def leakage_section(
    audit: dict[str, Any],
    clean: list[dict[str, Any]],
    records: list[dict[str, Any]],
    image_roots: dict[str, str],
) -> Section:
    """Counts per pair of sources, the pairs themselves (thumbnails side by side in HTML),
    and each model's metrics with the leaked test images removed beside the full split."""
    from .leakage import thumbnail_data_uri

    esc = html.escape
    header = ["test split", "other source", "test images", "source images", "exact", "near"]
    body = [
        [
            c["test"],
            c["source"] + (" (test split)" if c["between_tests"] else ""),
            c["n_test_images"],
            c["n_source_images"],
            c["exact"],
            c["near"],
        ]
        for c in audit["counts"]
    ]
    note = (
        f"Exact = identical decoded pixels; near = perceptual-hash (pHash) Hamming distance "
        f"<= {audit['max_hamming']}."
    )
    confirmed = audit.get("confirmed_with")
    if confirmed and confirmed.get("model"):
        note += (
            f" Near pairs confirmed by image-embedding cosine >= {confirmed['threshold']:g} "
            f"with {confirmed['model']}: {confirmed['checked']} candidates checked, "
            f"{confirmed['rejected']} rejected."
        )
    counts = table_section("", header, body, note)

    pairs = audit["pairs"]
    header = [
        "test image",
        "other image",
        "source",
        "kind",
        "pHash distance",
        "test pixels",
        "other pixels",
    ]
    body = [
        [
            f"{p['test_dataset']}/{p['test_image']}",
            p["source_image"],
            p["source"],
            p["kind"],
            p["hamming"],
            p["test_pixel_sha256"][:16],
            p["source_pixel_sha256"][:16],
        ]
        for p in pairs[:MAX_PAIRS_SHOWN]
    ]
    listed = table_section(
        "",
        header,
        body,
        f"{len(pairs)} pairs"
        + (
            f" (first {MAX_PAIRS_SHOWN} shown; all in results/leakage/audit.json)"
            if len(pairs) > MAX_PAIRS_SHOWN
            else ""
        ),
    )
    thumbs = []
    for p in pairs[:MAX_PAIRS_SHOWN]:
        src_ds = p["source"].split(":", 1)[0]
        try:
            a = thumbnail_data_uri(Path(image_roots[p["test_dataset"]]) / p["test_path"])
            b = thumbnail_data_uri(Path(image_roots[src_ds]) / p["source_path"])
        except (KeyError, OSError, RsmEvalError):
            continue
        thumbs.append(
            f'<figure style="display:inline-block;margin:4px"><img src="{a}" alt="test">'
            f'<img src="{b}" alt="other"><figcaption style="font-size:11px">'
            f"{esc(p['test_image'])} / {esc(p['source_image'])} ({esc(p['kind'])})"
            "</figcaption></figure>"
        )

    full = {
        (r["model"], r["dataset"]): r
        for r in records
        if r.get("protocol") == "remoteclip" and not r.get("autocast")
    }
    header = [
        "model",
        "dataset",
        "leaked test images removed",
        "mean_recall (full)",
        "mean_recall (clean)",
        "t2i_r1 (full)",
        "t2i_r1 (clean)",
    ]
    body = []
    for c in sorted(clean, key=lambda r: (r["dataset"], r["model"])):
        f = full.get((c["model"], c["dataset"]))
        if f is None:
            continue
        body.append(
            [
                c["model"],
                c["dataset"],
                len(c.get("excluded_images", [])),
                f"{f['metrics']['mean_recall']:.2f}",
                f"{c['metrics']['mean_recall']:.2f}",
                f"{f['metrics']['t2i_r1']:.2f}",
                f"{c['metrics']['t2i_r1']:.2f}",
            ]
        )
    cleaned = table_section(
        "",
        header,
        body,
        "Metrics on the test split without the images "
        "found in a training source, beside the full split.",
    )
    md = "\n\n".join([counts.md, listed.md, cleaned.md])
    page = counts.html + listed.html + "".join(thumbs) + cleaned.html
    return Section("Leakage audit", md, page)


def finetune_section(trained: list[dict[str, Any]], records: list[dict[str, Any]]) -> Section:
    """Each fine-tuned model beside its starting point, with its recipe and data discipline."""
    metrics = {
        (r["model"], r["dataset"]): r["metrics"]
        for r in records
        if r.get("protocol") == "remoteclip" and not r.get("autocast")
    }
    header = [
        "model",
        "base",
        "dataset",
        "mean_recall (base)",
        "mean_recall (fine-tuned)",
        "ratio",
        "t2i_r1 (base)",
        "t2i_r1 (fine-tuned)",
    ]
    body, notes = [], []
    for t in trained:
        name = t.get("model_name") or t.get("name")
        base = t["base_model"]["name"]
        for (m, d), fine in sorted(metrics.items()):
            if m != name or (base, d) not in metrics:
                continue
            b = metrics[(base, d)]
            ratio = fine["mean_recall"] / b["mean_recall"] if b["mean_recall"] else float("inf")
            body.append(
                [
                    m,
                    base,
                    d,
                    f"{b['mean_recall']:.2f}",
                    f"{fine['mean_recall']:.2f}",
                    f"{ratio:.1f}x",
                    f"{b['t2i_r1']:.2f}",
                    f"{fine['t2i_r1']:.2f}",
                ]
            )
        data, params, train = t["data"], t["params"], t["training"]
        overlap = data["test_overlap"]
        text = (
            f"{name}: open_clip_train, {params['epochs']} epochs, lr {params['lr']:g}, "
            f"batch {params['batch_size']}, seed {params['seed']}, {train['precision']} on "
            f"{train['device']}; {data['n_train_pairs']} training and {data['n_val_pairs']} "
            f"validation pairs; test overlap policy '{overlap['policy']}' against "
            f"{', '.join(overlap['checked']) or 'nothing'}: {len(overlap['overlaps'])} "
            "overlapping images"
        )
        if overlap["overlaps"] and overlap["policy"] == "allow":
            text += " LEFT IN the training data (the fine-tuned numbers include test leakage)"
        elif overlap["overlaps"]:
            text += " excluded from training"
        text += f"; trained in {train['train_seconds']:.0f} s; address {t['address'][:16]}."
        notes.append(text)
    return table_section("Fine-tuning", header, body, " ".join(notes))


def classification_section(records: list[dict[str, Any]]) -> Section:
    header = [
        "model",
        "dataset",
        "classes",
        "labelled images",
        "top-1",
        "top-5",
        "mean per-class top-1",
    ]
    body = []
    for r in sorted(records, key=lambda r: (r["dataset"], r["model"])):
        if r.get("applicable"):
            body.append(
                [
                    r["model"],
                    r["dataset"],
                    len(r["classes"]),
                    f"{r['n']} of {r['n_images']} ({r['coverage']:.0f}%)",
                    f"{r['top1']:.2f}",
                    f"{r['top5']:.2f}",
                    f"{r['mean_class_top1']:.2f}",
                ]
            )
        else:
            body.append(
                [
                    r["model"],
                    r["dataset"],
                    "-",
                    f"{r['coverage']:.0f}%",
                    "-",
                    "-",
                    r.get("reason", ""),
                ]
            )
    templates = records[0]["templates"] if records else []
    note = (
        "Zero-shot scene classification of the evaluated test images, classes from file "
        "names (<class>_<n>), image features reused from the retrieval embedding; "
        "classifier = mean of the prompt embeddings per class. Templates: "
        + "; ".join(templates)
        + "."
    )
    return table_section("Zero-shot classification", header, body, note)


def _provenance_section(prov: dict[str, Any]) -> Section:
    header = [
        "model",
        "dataset",
        "row address",
        "weights",
        "manifest sha256",
        "image features sha256",
        "text features sha256",
    ]
    body = [
        [
            e["model"],
            e["dataset"],
            e["row_address"],
            json.dumps(e["weights"], sort_keys=True),
            e["manifest_sha256"],
            e["image_features_sha256"],
            e["text_features_sha256"],
        ]
        for e in prov["rows"]
    ]
    note = (
        f"git commit: {prov['git_commit']}. Packages: "
        + ", ".join(f"{k} {v}" for k, v in prov["packages"].items())
        + "."
    )
    return table_section("Provenance", header, body, note)


def render(
    records: list[dict[str, Any]],
    summaries: list[dict[str, Any]],
    out_dir: Path,
    workflow_root: Path,
    published_keys: dict[str, Any] | None = None,
    tolerance: float = 1.0,
    extra_sections: list[Section] | None = None,
    paired: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    table = rows(records)
    prov = provenance(records, summaries, workflow_root)
    compared, unmatched = published_comparison(table, published_keys or {}, tolerance)
    header = list(CSV_COLUMNS) + ["protocol"]
    body = [[r[k] if k not in METRICS else with_ties(r, k) for k in header] for r in table]
    sections = [
        table_section(
            "Retrieval",
            header,
            body,
            PROTOCOL_NOTE + wide_ties_note(table),
            extra_html="<h3>Recall@k</h3>" + _svg_chart(table),
        ),
        _published_section(compared, unmatched, tolerance),
        _statistics_section(records, paired or []),
        _dataset_section(summaries),
        *(extra_sections or []),
        _provenance_section(prov),
    ]
    md = "\n".join(
        ["# RSM-Eval retrieval report", ""] + [f"## {s.title}\n\n{s.md}\n" for s in sections]
    )
    body_html = "".join(f"<h2>{html.escape(s.title)}</h2>{s.html}" for s in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>RSM-Eval retrieval report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;word-break:break-all}}</style>
</head><body><h1>RSM-Eval retrieval report</h1>{body_html}</body></html>
"""
    out_dir = Path(out_dir)
    paths = {
        "csv": out_dir / "retrieval.csv",
        "md": out_dir / "report.md",
        "html": out_dir / "report.html",
        "provenance": out_dir / "provenance.json",
    }
    prov["published_comparison"] = compared
    cas.write_text_atomic(paths["csv"], to_csv(table))
    cas.write_text_atomic(paths["md"], md)
    cas.write_text_atomic(paths["html"], page)
    cas.write_json_atomic(paths["provenance"], prov)
    return paths
