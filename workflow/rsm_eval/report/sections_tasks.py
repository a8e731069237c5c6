"""Sections of the stages after retrieval: fine-tuning, leakage audit, classification.

Each is shown only when its products were given (see :data:`.sections.SECTIONS`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RsmEvalError
from . import figures
from .blocks import Output, Section, join, table_section
from .collect import METRICS, PUBLISHED_PROTOCOL, Report, ci_bounds

MAX_PAIRS_SHOWN = 60


def _index(rep: Report) -> dict[tuple[str, str], dict[str, Any]]:
    """Published-protocol rows of the one table by (model, dataset)."""
    return {(r["model"], r["dataset"]): r for r in rep.table if r["variant"] == PUBLISHED_PROTOCOL}


def finetuning(rep: Report, out: Output) -> Section | None:
    """Each fine-tuned model beside its starting point, with its recipe and data discipline."""
    if not rep.finetunes:
        return None
    index = _index(rep)
    header = ["model", "base", "dataset", "mean_recall (base)", "mean_recall (fine-tuned)",
              "ratio", "t2i_r1 (base)", "t2i_r1 (fine-tuned)"]  # fmt: skip
    body, notes, plots = [], [], []
    for t in rep.finetunes:
        name = t.get("model_name") or t.get("name")
        base = t["base_model"]["name"]
        for (m, d), fine in sorted(index.items()):
            if m != name or (base, d) not in index:
                continue
            b = index[(base, d)]
            ratio = fine["mean_recall"] / b["mean_recall"] if b["mean_recall"] else float("inf")
            body.append(
                [m, base, d, f"{b['mean_recall']:.2f}", f"{fine['mean_recall']:.2f}",
                 f"{ratio:.1f}x", f"{b['t2i_r1']:.2f}", f"{fine['t2i_r1']:.2f}"]
            )  # fmt: skip
            series = [
                (f"{r['model']} ({kind})", [r[k] for k in METRICS],
                 [ci_bounds(r, k) for k in METRICS])
                for r, kind in ((b, "base"), (fine, "fine-tuned"))
            ]  # fmt: skip
            plots.append(
                out.figure(
                    f"finetune_{m}_{d}",
                    figures.grouped_bars_figure(
                        list(METRICS),
                        series,
                        f"{m} fine-tuned from {base}, tested on {d}: RemoteCLIP/RSM-CLIP "
                        "protocol, 95% bootstrap intervals",
                        "recall (%)",
                    ),
                    f"Base versus fine-tuned on {d} ({m} from {base}).",
                )
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
    return join("Fine-tuning", [table_section("", header, body, " ".join(notes)), *plots])


def _thumbs(audit: dict[str, Any], image_roots: dict[str, str]) -> str:
    from ..leakage import thumbnail_data_uri

    esc = html.escape
    out = []
    for p in audit["pairs"][:MAX_PAIRS_SHOWN]:
        src_ds = p["source"].split(":", 1)[0]
        try:
            a = thumbnail_data_uri(Path(image_roots[p["test_dataset"]]) / p["test_path"])
            b = thumbnail_data_uri(Path(image_roots[src_ds]) / p["source_path"])
        except (KeyError, OSError, RsmEvalError):
            continue
        out.append(
            f'<figure class="thumbs"><img src="{a}" alt="test">'
            f'<img src="{b}" alt="other"><figcaption>'
            f"{esc(p['test_image'])} / {esc(p['source_image'])} ({esc(p['kind'])})"
            "</figcaption></figure>"
        )
    return "".join(out)


def leakage(rep: Report, out: Output) -> Section | None:
    """Counts per pair of sources, the pairs themselves (thumbnails side by side in HTML),
    and each model's metrics with the leaked test images removed beside the full split."""
    audit = rep.audit
    if not audit:
        return None
    header = ["test split", "other source", "test images", "source images", "exact", "near"]
    body = [
        [c["test"], c["source"] + (" (test split)" if c["between_tests"] else ""),
         c["n_test_images"], c["n_source_images"], c["exact"], c["near"]]
        for c in audit["counts"]
    ]  # fmt: skip
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
    header = ["test image", "other image", "source", "kind", "pHash distance", "test pixels",
              "other pixels"]  # fmt: skip
    body = [
        [f"{p['test_dataset']}/{p['test_image']}", p["source_image"], p["source"], p["kind"],
         p["hamming"], p["test_pixel_sha256"][:16], p["source_pixel_sha256"][:16]]
        for p in pairs[:MAX_PAIRS_SHOWN]
    ]  # fmt: skip
    more = len(pairs) > MAX_PAIRS_SHOWN
    listed = table_section(
        "",
        header,
        body,
        f"{len(pairs)} pairs"
        + (f" (first {MAX_PAIRS_SHOWN} shown; all in results/leakage/audit.json)" if more else ""),
        extra_html=_thumbs(audit, rep.image_roots),
    )
    full = _index(rep)
    header = ["model", "dataset", "leaked test images removed", "mean_recall (full)",
              "mean_recall (clean)", "t2i_r1 (full)", "t2i_r1 (clean)"]  # fmt: skip
    body = []
    for c in sorted(rep.clean, key=lambda r: (r["dataset"], r["model"])):
        f = full.get((c["model"], c["dataset"]))
        if f is None:
            continue
        body.append(
            [c["model"], c["dataset"], len(c.get("excluded_images", [])),
             f"{f['mean_recall']:.2f}", f"{c['metrics']['mean_recall']:.2f}",
             f"{f['t2i_r1']:.2f}", f"{c['metrics']['t2i_r1']:.2f}"]
        )  # fmt: skip
    cleaned = table_section(
        "",
        header,
        body,
        "Metrics on the test split without the images found in a training source, beside "
        "the full split.",
    )
    return join("Leakage audit", [counts, listed, cleaned])


def _class_figures(rep: Report, out: Output, recs: list[dict[str, Any]]) -> list[Section]:
    parts = []
    for dataset in sorted({r["dataset"] for r in recs}):
        sel = sorted((r for r in recs if r["dataset"] == dataset), key=lambda r: r["model"])
        classes = sorted({c for r in sel for c in r.get("per_class", {})})
        if not classes:
            continue
        series = [
            (r["model"], [r["per_class"].get(c, {}).get("top1", 0.0) for c in classes],
             [None] * len(classes))
            for r in sel
        ]  # fmt: skip
        parts.append(
            out.figure(
                f"classification_per_class_{dataset}",
                figures.grouped_bars_figure(
                    classes,
                    series,
                    f"Zero-shot top-1 per class on {dataset} (test split, prompt ensemble of "
                    f"{len(sel[0].get('templates') or [])} templates)",
                    "top-1 accuracy (%)",
                    horizontal=True,
                ),
                f"Per-class zero-shot top-1 accuracy on {dataset}, per model.",
            )
        )
        for r in sel:
            if "confusion" not in r:
                continue
            conf = np.asarray(r["confusion"], dtype=float)
            names = list(r.get("class_ids") or r["classes"])
            rowsum = conf.sum(axis=1, keepdims=True)
            share = np.divide(100 * conf, rowsum, out=np.full_like(conf, np.nan), where=rowsum > 0)
            parts.append(
                out.figure(
                    f"confusion_{r['model']}_{dataset}",
                    figures.heatmap_figure(
                        share,
                        names,
                        names,
                        f"Confusion matrix, {r['model']} on {dataset} (zero-shot; row = true "
                        "class, share of its images in %)",
                        "share of the true class (%)",
                        fmt="{:.0f}",
                        annotate=len(names) <= 30,
                        xlabel="predicted class",
                        ylabel="true class",
                    ),
                    f"Confusion matrix of {r['model']} on {dataset} (rows sum to 100%).",
                )
            )
    return parts


def classification(rep: Report, out: Output) -> Section | None:
    records = rep.classification
    if not records:
        return None
    header = ["model", "dataset", "classes", "labelled images", "top-1", "top-5",
              "mean per-class top-1"]  # fmt: skip
    body = []
    for r in sorted(records, key=lambda r: (r["dataset"], r["model"])):
        if r.get("applicable"):
            body.append(
                [r["model"], r["dataset"], len(r["classes"]),
                 f"{r['n']} of {r['n_images']} ({r['coverage']:.0f}%)", f"{r['top1']:.2f}",
                 f"{r['top5']:.2f}", f"{r['mean_class_top1']:.2f}"]
            )  # fmt: skip
        else:
            body.append([r["model"], r["dataset"], "-", f"{r['coverage']:.0f}%", "-", "-",
                         r.get("reason", "")])  # fmt: skip
    templates = records[0].get("templates") or []
    note = (
        "Zero-shot scene classification of the evaluated test images, classes from file "
        "names (<class>_<n>), image features reused from the retrieval embedding; "
        "classifier = mean of the prompt embeddings per class. Templates: "
        + "; ".join(templates)
        + "."
    )
    applicable = [r for r in records if r.get("applicable")]
    parts = [table_section("", header, body, note), *_class_figures(rep, out, applicable)]
    return join("Zero-shot classification", parts)


# The localization and scene stages format their own sections (localize_report,
# scene_report); imported here, when shown, since those modules build on this package.


def localization(rep: Report, out: Output) -> Section | None:
    if not rep.localization:
        return None
    from ..localize_report import localization_section

    return localization_section(rep.localization, out.out_dir)


def scenes(rep: Report, out: Output) -> list[Section] | None:
    if not rep.scenes:
        return None
    from ..scene_report import scene_sections

    return scene_sections(
        [Path(p) for p in rep.scenes], rep.published_keys, tolerance=rep.tolerance
    )
