"""Report sections for scene classification: one per scene dataset, from the stage's JSON.

:func:`scene_sections` reads only the scene-manifest summaries, the zero-shot records and
the linear-probe records (their files, in any order) and returns one report section per
dataset: the data, zero-shot accuracy with bootstrap intervals per model and template set,
published versus reproduced where a source states the same protocol (template set), per-class
accuracy, the most confused class pairs and the full confusion matrices, and the few-shot
linear probes (mean +- std over seeds) with their protocol.
"""

from __future__ import annotations

import csv
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from .errors import RsmEvalError
from .report import Section, table_section

PUBLISHED_PATH = Path(__file__).resolve().parent / "data" / "published_classification.csv"


def load_published(path: Path = PUBLISHED_PATH) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["top1"] = float(r["top1"])
    return rows


def _read(paths: list[Path]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    by_dataset: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"summary": [], "zeroshot": [], "linear_probe": []}
    )
    for p in paths:
        try:
            rec = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RsmEvalError(f"{p}: unreadable scene-classification record ({exc})") from None
        kind = rec.get("stage", "summary" if "format" in rec else None)
        if kind not in ("summary", "zeroshot", "linear_probe") or "dataset" not in rec:
            raise RsmEvalError(f"{p}: not a scene manifest summary, zeroshot or probe record")
        by_dataset[rec["dataset"]][kind].append(rec)
    return by_dataset


def _ci(rec: dict[str, Any], key: str) -> str:
    ci = (rec.get("ci") or {}).get(key)
    return f"{rec[key]:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{rec[key]:.2f}"


def _published_rows(
    zeroshot: list[dict[str, Any]], dataset_key: str, models: dict[str, Any], tolerance: float
) -> tuple[list[list[Any]], list[str]]:
    """Published beside reproduced for the same model, backbone, dataset and template set."""
    published = [r for r in load_published() if r["dataset"] == dataset_key]
    body, unmatched = [], []
    reproduced = {
        (models[z["model"]]["model"], models[z["model"]]["backbone"], z["template_set"]): z
        for z in zeroshot
        if z["model"] in models
    }
    for p in published:
        z = reproduced.get((p["model"], p["backbone"], p["protocol"]))
        if z is None:
            unmatched.append(f"{p['model']} {p['backbone']} {p['top1']:.2f} ({p['source']})")
            continue
        diff = z["top1"] - p["top1"]
        flag = "" if abs(diff) <= tolerance else f"beyond {tolerance:g}"
        body.append(
            [z["model"], p["protocol"], f"{p['top1']:.2f}", f"{z['top1']:.2f}", f"{diff:+.2f}",
             flag, p["source"]]
        )  # fmt: skip
    return body, unmatched


def _confusion_html(z: dict[str, Any]) -> str:
    ids = z["class_ids"]
    esc = html.escape
    head = "".join(f"<th title='{esc(c)}'>{i}</th>" for i, c in enumerate(ids))
    trs = "".join(
        f"<tr><th>{i} {esc(c)}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
        for i, (c, row) in enumerate(zip(ids, z["confusion"], strict=True))
    )
    return (
        f"<details><summary>Confusion matrix: {esc(z['model'])}, {esc(z['template_set'])} "
        "(rows: true class, columns: predicted)</summary>"
        f"<table><tr><th></th>{head}</tr>{trs}</table></details>"
    )


def _most_confused(z: dict[str, Any], n: int = 5) -> str:
    ids, conf = z["class_ids"], z["confusion"]
    pairs = sorted(
        ((conf[i][j], ids[i], ids[j]) for i in range(len(ids)) for j in range(len(ids)) if i != j),
        reverse=True,
    )
    return "; ".join(f"{a} as {b} ({c})" for c, a, b in pairs[:n] if c > 0) or "none"


def _dataset_section(
    name: str, recs: dict[str, list[dict[str, Any]]], models: dict[str, Any], tolerance: float
) -> Section:
    parts: list[Section] = []
    notes = []
    for s in recs["summary"][:1]:
        counts = "; ".join(
            f"{split}: {c['classes']} classes, {c['images']} images"
            for split, c in s["counts"].items()
        )
        names = ", ".join(f"{k} -> {v}" for k, v in list(s["class_names"].items())[:60])
        notes.append(
            f"{name} ({s['format']}): {counts}. Every image decoded; counts checked against "
            f"the expected ones. Class names as prompted by the 'words' rule: {names}."
        )
    zs = sorted(recs["zeroshot"], key=lambda r: (r["model"], r["template_set"]))
    if zs:
        body = [
            [z["model"], z["template_set"], z["n_templates"], z["n"], _ci(z, "top1"),
             _ci(z, "top5"), _ci(z, "mean_per_class")]
            for z in zs
        ]  # fmt: skip
        boot = zs[0]["bootstrap"]
        parts.append(
            table_section(
                "",
                ["model", "templates", "n templates", "images", "top-1", "top-5", "mean per-class"],
                body,
                f"Zero-shot, split '{zs[0]['split']}': percent with {100 * boot['level']:g}% "
                f"bootstrap intervals ({boot['n_resamples']} resamples of the images, seed "
                f"{boot['seed']}). Classifier: per class, the mean of the L2-normalised "
                "prompt embeddings, re-normalised (CLIP_benchmark's rule; GeoRSCLIP's own code "
                "averages unnormalised embeddings); image features reused from the feature "
                "store.",
            )  # fmt: skip
        )
        dataset_key = zs[0].get("published", name)
        pub, unmatched = _published_rows(zs, dataset_key, models, tolerance)
        if pub or unmatched:
            parts.append(
                table_section(
                    "",
                    [
                        "model",
                        "protocol",
                        "published top-1",
                        "reproduced",
                        "difference",
                        "flag",
                        "source",
                    ],
                    pub,
                    "Published versus reproduced: only where the source's protocol is the "
                    "template set evaluated here. Published under protocols not evaluated here "
                    "(not compared): " + ("; ".join(unmatched) or "none") + ".",
                )  # fmt: skip
            )
        per_class_header = ["class"] + [f"{z['model']} / {z['template_set']}" for z in zs]
        per_class = [
            [c] + [f"{z['per_class'][c]['top1']:.1f}" if c in z["per_class"] else "-" for z in zs]
            for c in zs[0]["class_ids"]
        ]
        confused = " ".join(f"{z['model']} / {z['template_set']}: {_most_confused(z)}." for z in zs)
        parts.append(
            table_section(
                "",
                per_class_header,
                per_class,
                "Per-class top-1. Most confused (true as predicted, count): " + confused,
                extra_html="".join(_confusion_html(z) for z in zs),
            )
        )
    probes = sorted(recs["linear_probe"], key=lambda r: r["model"])
    if probes:
        body = []
        for p in probes:
            for label, r in p["results"].items():
                cs = sorted({s["C"] for s in r["seeds"]})
                body.append(
                    [p["model"], label, len(r["seeds"]),
                     f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}",
                     f"{r['top5_mean']:.2f} ± {r['top5_std']:.2f}",
                     f"{r['mean_per_class_mean']:.2f} ± {r['mean_per_class_std']:.2f}",
                     ", ".join(f"{c:g}" for c in cs)]
                )  # fmt: skip
        p0 = probes[0]
        parts.append(
            table_section(
                "",
                ["model", "k per class", "seeds", "top-1", "top-5", "mean per-class", "C chosen"],
                body,
                f"Linear probe (scikit-learn LogisticRegression, lbfgs, max_iter "
                f"{p0['max_iter']}) on the L2-normalised cached image features. Train/test: "
                f"{p0['split_rule']} ({p0['n_train_pool']} training-pool and {p0['n_test']} "
                "test images). k-shot: k images per class drawn per seed from the training "
                "pool, the next k of each class as the validation set; 'full': every training "
                "image, 20% of each class as the validation set, then refit on all. C from "
                f"{', '.join(f'{c:g}' for c in p0['C_grid'])} by validation accuracy (ties: the "
                "smaller); the test images are never used to choose it. Mean ± standard "
                "deviation over seeds.",
            )  # fmt: skip
        )
    md = "\n\n".join(notes + [p.md for p in parts])
    page = "".join(f"<p>{html.escape(n)}</p>" for n in notes) + "".join(p.html for p in parts)
    return Section(f"Scene classification: {name}", md, page)


def scene_sections(
    paths: list[Path], published_keys: dict[str, Any] | None = None, tolerance: float = 1.0
) -> list[Section]:
    """One report section per scene dataset, from the scene stages' JSON outputs."""
    models = (published_keys or {}).get("models", {})
    return [
        _dataset_section(name, recs, models, tolerance)
        for name, recs in sorted(_read(paths).items())
    ]
