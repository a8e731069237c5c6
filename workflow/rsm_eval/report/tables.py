"""The papers' table layouts, filled from the report's one table.

- ``retrieval_<dataset>``: RemoteCLIP's retrieval table (image→text and text→image R@1/5/10
  and mean recall), one row per model;
- ``table1_zero_shot``: RSM-CLIP's Table 1 (image→text R@1, text→image R@1 and mean recall
  per test set) for the models used as they were published;
- ``table2_fine_tuned``: RSM-CLIP's Table 2, the same columns for fine-tuned models, grouped
  by backbone;
- ``classification``: zero-shot scene classification top-1, top-5 and mean per-class top-1
  per dataset.

Only published-protocol rows (RemoteCLIP's, fp32) enter the papers' layouts; a row of another
protocol gets its own ``retrieval_<dataset>_<variant>`` table, labelled as such.
"""

from __future__ import annotations

from typing import Any

from .collect import METRICS, PUBLISHED_PROTOCOL, Report, ci_bounds, wide_tie
from .latex import Cell, PaperTable

PROTOCOLS = {
    "remoteclip": "RemoteCLIP/RSM-CLIP protocol (test split, each caption's positive is its "
    "own image, fp32; percent)",
    "remoteclip-autocast": "RemoteCLIP/RSM-CLIP protocol with mixed precision (autocast; "
    "not the published fp32 setting; percent)",
    "skyscript": "SkyScript protocol (de-duplicated captions, every image carrying a "
    "caption's exact string is a positive; not comparable with the published tables; "
    "percent)",
}
DIRECTIONS = [("Image → text", ["R@1", "R@5", "R@10"]), ("Text → image", ["R@1", "R@5", "R@10"])]
SHORT = ["i2t_r1", "t2i_r1", "mean_recall"]


def protocol_text(variant: str) -> str:
    return PROTOCOLS.get(variant, f"{variant} protocol (percent)")


def cell(row: dict[str, Any] | None, m: str) -> Cell:
    if row is None:
        return Cell(None)
    return Cell(row[m], ci_bounds(row, m), wide_tie(row, m))


def retrieval_tables(rep: Report) -> list[PaperTable]:
    out = []
    variants = sorted({(r["dataset"], r["variant"]) for r in rep.table})
    for dataset, variant in variants:
        rows = sorted(rep.rows_for(dataset, variant), key=lambda r: r["model"])
        first = rows[0]
        suffix = "" if variant == PUBLISHED_PROTOCOL else f"_{variant}"
        out.append(
            PaperTable(
                name=f"retrieval_{dataset}{suffix}",
                caption=(
                    f"Cross-modal retrieval on {dataset} ({first['split']} split, "
                    f"{first['n_images']} images, {first['n_captions']} captions), "
                    f"{protocol_text(variant)}; mR = mean of the six recalls."
                ),
                groups=[*DIRECTIONS, ("", ["mR"])],
                row_groups=[("", [(r["model"], [cell(r, m) for m in METRICS]) for r in rows])],
            )
        )
    return out


def _by_dataset(rep: Report, models: list[str]) -> list[tuple[str, list[Cell]]]:
    datasets = rep.datasets()
    index = {(r["model"], r["dataset"]): r for r in rep.table if r["variant"] == PUBLISHED_PROTOCOL}
    return [
        (m, [cell(index.get((m, d)), k) for d in datasets for k in SHORT])
        for m in models
        if any((m, d) in index for d in datasets)
    ]


def _short_groups(rep: Report) -> list[tuple[str, list[str]]]:
    return [(d, ["I→T R@1", "T→I R@1", "mR"]) for d in rep.datasets()]


def paper_tables(rep: Report) -> list[PaperTable]:
    """Table 1 (zero-shot) and Table 2 (fine-tuned, by backbone) layouts, where they have rows."""
    models = sorted({r["model"] for r in rep.table if r["variant"] == PUBLISHED_PROTOCOL})
    zero = [m for m in models if rep.regime(m) == "zero-shot"]
    tuned = [m for m in models if rep.regime(m) != "zero-shot"]
    out = []
    note = "I→T = image → text, T→I = text → image, mR = mean recall of R@1/5/10 both ways."
    body = _by_dataset(rep, zero)
    if body:
        out.append(
            PaperTable(
                name="table1_zero_shot",
                caption=(
                    f"Zero-shot retrieval (RSM-CLIP Table 1 layout), {protocol_text('remoteclip')}."
                ),
                groups=_short_groups(rep),
                row_groups=[("", body)],
                notes=[note],
            )
        )
    groups = []
    for backbone in sorted({rep.backbone(m) for m in tuned}):
        body = _by_dataset(rep, [m for m in tuned if rep.backbone(m) == backbone])
        if body:
            groups.append((backbone, body))
    if groups:
        out.append(
            PaperTable(
                name="table2_fine_tuned",
                caption=(
                    "Retrieval after fine-tuning (RSM-CLIP Table 2 layout), by backbone, "
                    f"{protocol_text('remoteclip')}."
                ),
                groups=_short_groups(rep),
                row_groups=groups,
                notes=[note],
            )
        )
    return out


def classification_table(rep: Report) -> PaperTable | None:
    recs = [r for r in rep.classification if r.get("applicable")]
    if not recs:
        return None
    datasets = sorted({r["dataset"] for r in recs})
    index = {(r["model"], r["dataset"]): r for r in recs}
    keys = [("top1", "top1"), ("top5", "top5"), ("mean_class_top1", "mean_per_class")]

    def c(rec: dict[str, Any] | None, key: str, ci_key: str) -> Cell:
        if rec is None or key not in rec:
            return Cell(None)
        ci = (rec.get("ci") or {}).get(ci_key)
        return Cell(round(rec[key], 2), None if ci is None else (round(ci[0], 2), round(ci[1], 2)))

    body = [
        (m, [c(index.get((m, d)), k, ck) for d in datasets for k, ck in keys])
        for m in sorted({r["model"] for r in recs})
    ]
    templates = recs[0].get("templates") or []
    return PaperTable(
        name="classification",
        caption=(
            "Zero-shot scene classification of the test images (classes from the file names), "
            f"accuracy in percent; prompt ensemble of {len(templates)} templates."
        ),
        groups=[(d, ["top-1", "top-5", "mean per-class"]) for d in datasets],
        row_groups=[("", body)],
    )


def all_tables(rep: Report) -> list[PaperTable]:
    extra = classification_table(rep)
    return retrieval_tables(rep) + paper_tables(rep) + ([extra] if extra else [])
