"""Read the products into one model: the only place the report's numbers come from.

:class:`Report` holds the evaluate stage's records and, built once from them, the retrieval
table (:func:`rows`, values rounded to the protocol's 2 decimals). The CSV, the Markdown and
HTML tables, the LaTeX tables and every figure read that table, so they cannot disagree.
Nothing here recomputes a metric: changing the report package reruns no model.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import RsmEvalError

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
# Each metric's lowest and highest value over all orders of exactly tied scores (present when
# the evaluate stage records ``tie_interval``; empty cells otherwise).
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
NUMBER_COLUMNS = frozenset(METRICS + CI_COLUMNS + TIE_COLUMNS)
PUBLISHED_PROTOCOL = "remoteclip"
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
    "matplotlib",
)
PUBLISHED_PATH = Path(__file__).resolve().parent.parent / "data" / "published.csv"


def read_json(path: Path | str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RsmEvalError(f"{path}: unreadable {what} ({exc})") from None


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    records = []
    for p in paths:
        rec = read_json(p, "metrics record")
        missing = [k for k in ("model", "dataset", "split", "metrics", "address") if k not in rec]
        if missing:
            raise RsmEvalError(f"{p}: metrics record lacks {missing}")
        records.append(rec)
    return sorted(records, key=lambda r: (r["dataset"], r["model"], r.get("protocol", "")))


def _pair(r: dict[str, Any], key: str, m: str) -> tuple[float | None, float | None]:
    low, high = (r.get(key) or {}).get(m, (None, None))
    return (None if low is None else round(low, 2), None if high is None else round(high, 2))


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record: the CSV's columns (rounded to 2 decimals), plus ``variant``
    (protocol and precision, e.g. ``remoteclip-autocast``), which the CSV leaves out."""
    out = []
    for r in records:
        row = {k: r.get(k) for k in CSV_COLUMNS[:5]}
        row.update({k: round(r["metrics"][k], 2) for k in METRICS})
        for m in METRICS:
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = _pair(r, "ci", m)
        row.update(
            protocol=r.get("protocol", PUBLISHED_PROTOCOL),
            n_distinct_captions=r.get("n_distinct_captions"),
            address=r["address"],
            model_address=r["inputs"]["model_address"],
            manifest_address=r["inputs"]["manifest_address"],
        )
        for m in METRICS:
            row[f"{m}_tie_low"], row[f"{m}_tie_high"] = _pair(r, "tie_interval", m)
        row["variant"] = r.get("variant") or (
            row["protocol"] + ("-autocast" if r.get("autocast") else "")
        )
        out.append(row)
    return out


def is_published_protocol(row: dict[str, Any]) -> bool:
    """The papers' protocol: RemoteCLIP's retrieval.py in fp32 (what their tables report)."""
    return row.get("variant", row.get("protocol")) == PUBLISHED_PROTOCOL


def label(row: dict[str, Any]) -> str:
    """A row's model name, with its variant when that is not the published protocol."""
    return row["model"] if is_published_protocol(row) else f"{row['model']} [{row['variant']}]"


def ci_bounds(row: dict[str, Any], m: str) -> tuple[float, float] | None:
    low, high = row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high")
    return None if low is None or high is None else (low, high)


def tie_bounds(row: dict[str, Any], m: str) -> tuple[float, float]:
    """A row's tie interval of metric ``m`` (the value itself when the record has none)."""
    low, high = row.get(f"{m}_tie_low"), row.get(f"{m}_tie_high")
    return (row[m], row[m]) if low is None or high is None else (low, high)


def wide_tie(row: dict[str, Any], m: str) -> bool:
    low, high = tie_bounds(row, m)
    return round(high - low, 2) > TIE_SHOWN_ABOVE


def with_ties(row: dict[str, Any], m: str) -> str:
    """The value, followed by its tie interval where that is wider than TIE_SHOWN_ABOVE."""
    low, high = tie_bounds(row, m)
    return f"{row[m]:.2f}" + (f" (ties {low:.2f}-{high:.2f})" if wide_tie(row, m) else "")


def wide_ties_note(table: list[dict[str, Any]]) -> str:
    """Names the metrics whose tie interval is wider than TIE_SHOWN_ABOVE, per row."""
    if not any(row.get(f"{m}_tie_low") is not None for row in table for m in METRICS):
        return ""
    wide = []
    for row in table:
        ms = [m for m in METRICS if wide_tie(row, m)]
        if ms:
            wide.append(f"{row['model']} / {row['dataset']} ({row['protocol']}): {', '.join(ms)}")
    if not wide:
        return f" No tie interval is wider than {TIE_SHOWN_ABOVE:g}."
    return f" Tie intervals wider than {TIE_SHOWN_ABOVE:g}: " + "; ".join(wide) + "."


def to_csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf,
        fieldnames=CSV_COLUMNS + EXTRA_COLUMNS,
        lineterminator="\n",
        extrasaction="ignore",
    )
    writer.writeheader()
    for row in table:
        writer.writerow(
            {
                k: (f"{v:.2f}" if k in NUMBER_COLUMNS and v is not None else v)
                for k, v in row.items()
            }
        )
    return buf.getvalue()


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

    A published number matches when it lies within the row's tie interval widened by
    ``tolerance`` (without an interval: ``|diff| <= tolerance``); others are ``flagged``.
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
            outside = {
                m: max(round(lo - pub[m], 2), round(pub[m] - hi, 2)) for m, (lo, hi) in ties.items()
            }
            compared.append(
                {
                    "model": row["model"],
                    "dataset": row["dataset"],
                    "published_as": f"{pub['model']} {pub['backbone']} ({pub['regime']})",
                    "regime": pub["regime"],
                    "source": pub["source"],
                    "ours": {m: row[m] for m in diffs},
                    "published": {m: pub[m] for m in diffs},
                    "diff": diffs,
                    "ci": {m: ci_bounds(row, m) for m in diffs},
                    "tie_interval": {m: list(b) for m, b in ties.items()},
                    "flagged": sorted(m for m, d in outside.items() if d > tolerance),
                }
            )
    return compared, unmatched


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git(root: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
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
                "image_features_sha256": r["inputs"].get("image_features_sha256"),
                "text_features_sha256": r["inputs"].get("text_features_sha256"),
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


@dataclass
class Report:
    """Everything the sections draw from. ``table`` is the single source of every retrieval
    number shown; a product that was not given is empty, and its sections are not shown."""

    records: list[dict[str, Any]]
    table: list[dict[str, Any]]
    summaries: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    compared: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    tolerance: float = 1.0
    published_keys: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] | None = None
    clean: list[dict[str, Any]] = field(default_factory=list)
    classification: list[dict[str, Any]] = field(default_factory=list)
    finetunes: list[dict[str, Any]] = field(default_factory=list)
    image_roots: dict[str, str] = field(default_factory=dict)
    localization: list[dict[str, Any]] = field(default_factory=list)  # localize records
    scenes: list[Path | str] = field(default_factory=list)  # scene stages' JSON files
    # Other products by name (paths or loaded records), for sections added later.
    products: dict[str, Any] = field(default_factory=dict)

    def rows_for(self, dataset: str, variant: str = PUBLISHED_PROTOCOL) -> list[dict[str, Any]]:
        return [r for r in self.table if r["dataset"] == dataset and r["variant"] == variant]

    def datasets(self) -> list[str]:
        return sorted({r["dataset"] for r in self.table})

    def fine_tuned(self) -> dict[str, str]:
        """Fine-tuned model name -> its base model name (from the finetune records)."""
        return {
            (t.get("model_name") or t.get("name")): t["base_model"]["name"] for t in self.finetunes
        }

    def regime(self, model: str) -> str:
        """'zero-shot' or the fine-tuning regime ('ret3', 'fine-tuned') of a model."""
        key = self.published_keys.get("models", {}).get(model)
        if key:
            return key["regime"]
        return "fine-tuned" if model in self.fine_tuned() else "zero-shot"

    def backbone(self, model: str) -> str:
        key = self.published_keys.get("models", {}).get(model)
        if key:
            return key["backbone"]
        specs = [r["inputs"].get("model_spec") or {} for r in self.records if r["model"] == model]
        arch = specs[0].get("arch") if specs else None
        return arch if isinstance(arch, str) else "custom"


def collect(
    records: list[dict[str, Any]],
    summaries: list[dict[str, Any]] | None = None,
    workflow_root: Path = Path("."),
    *,
    published_keys: dict[str, Any] | None = None,
    tolerance: float = 1.0,
    **products: Any,
) -> Report:
    """The report's model from already loaded products (see :func:`from_paths`)."""
    table = rows(records)
    summaries = summaries or []
    compared, unmatched = published_comparison(table, published_keys or {}, tolerance)
    known = {f for f in Report.__dataclass_fields__ if f not in ("records", "table")}
    extra = {k: v for k, v in products.items() if k not in known}
    return Report(
        records=records,
        table=table,
        summaries=summaries,
        compared=compared,
        unmatched=unmatched,
        tolerance=tolerance,
        published_keys=published_keys or {},
        provenance=provenance(records, summaries, Path(workflow_root)),
        products=extra,
        **{k: v for k, v in products.items() if k in known and v is not None},
    )


def _json_list(paths: list[Path | str] | None, what: str) -> list[Any]:
    return [read_json(p, what) for p in paths or []]


def from_paths(
    metrics: list[Path | str],
    summaries: list[Path | str] | None = None,
    workflow_root: Path | str = ".",
    *,
    paired: Path | str | None = None,
    audit: Path | str | None = None,
    clean_metrics: list[Path | str] | None = None,
    classification: list[Path | str] | None = None,
    finetunes: list[Path | str] | None = None,
    image_roots: dict[str, str] | None = None,
    localization: list[Path | str] | None = None,
    scenes: list[Path | str] | None = None,
    published_keys: dict[str, Any] | None = None,
    tolerance: float = 1.0,
    **products: Any,
) -> Report:
    """Read every product the report uses from the files the workflow wrote."""
    return collect(
        load_records([Path(p) for p in metrics]),
        _json_list(summaries, "dataset summary"),
        Path(workflow_root),
        published_keys=published_keys,
        tolerance=tolerance,
        paired=read_json(paired, "paired comparison")["paired"] if paired else [],
        audit=read_json(audit, "leakage audit") if audit else None,
        clean=load_records([Path(p) for p in clean_metrics]) if clean_metrics else [],
        classification=_json_list(classification, "classification record"),
        finetunes=_json_list(finetunes, "finetune record"),
        image_roots=image_roots or {},
        localization=_json_list(localization, "localization record"),
        scenes=list(scenes or []),
        **products,
    )
