"""Fine-tuning stage: caption manifests + a base model -> a fine-tuned state dict, by openCLIP.

RSM-CLIP is openCLIP fully fine-tuned on RSM-ITD (then on RET-3). This module reproduces that
recipe with openCLIP's own trainer (`open_clip_train.main`), not a hand-written loop: it selects
image-caption pairs from one or more `captions` manifests (rsm_eval.schemas.CAPTIONS), checks
them against the evaluated test splits, writes the CSV files open_clip_train reads (absolute
image paths), runs open_clip_train in a subprocess, and converts its training checkpoint
(`{'epoch', 'name', 'state_dict', 'optimizer'}`) into a plain state dict that
`rsm_eval.models.build` loads as `weights:` of the same architecture.

Content address. `finetune_address` is a digest of the selected pairs' contents (image sha256,
caption sha256; never paths), the hyper-parameters (seed included), the base model's address,
this module's source and the openCLIP / torch / torchvision versions. Equal inputs give an
equal address, so a finished fine-tune can be found again (`cache_dir`) instead of retrained.
The training CSV is written in a canonical order (sorted by content), so the address fixes
what open_clip_train sees, and the validation split is a deterministic function of the pairs'
image hashes and the seed. What does not enter the address: the device, the precision that
`precision: auto` resolves to, the numbers of data-loader workers and CPU threads, paths and
names (a GPU run and a CPU run of one address are the same experiment, not bitwise the same
weights; two CPU runs with equal threads are, and the state dict is written byte-identically).

Split discipline. Training on an image of an evaluated test split inflates that split's
numbers. Images are compared by content (sha256), so a renamed copy is caught; a re-encoded
or brightness-shifted near duplicate is not (its bytes differ). The default policy refuses
such a training set; `test_overlap="exclude"` drops those images' pairs, and "allow" keeps
them; both list the overlaps in the training record.

Torch and open_clip are imported lazily: addresses are cheap.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from . import cas, models, schemas
from .config import Model
from .errors import RsmEvalError

STAGE = "finetune"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

# RSM-CLIP's hyper-parameters per architecture (AdamW, cosine schedule); the rest of
# FinetuneParams keeps openCLIP's defaults for ViTs.
PAPER_PRESETS: dict[str, dict[str, Any]] = {
    "ViT-B-32": {"lr": 2e-5, "batch_size": 256},
    "ViT-L-14": {"lr": 1e-6, "batch_size": 32},
}

PRECISIONS = ("auto", "amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32")
SCHEDULERS = ("cosine", "const")
TEST_OVERLAP_POLICIES = ("refuse", "exclude", "allow")

# Strings pandas.read_csv (what open_clip_train's CsvDataset uses) reads as missing values even
# when quoted; a caption equal to one of them would be trained on as the text "nan".
_PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
# Environment variables that make open_clip_train start torch.distributed (a Snakemake job
# under SLURM, or launched from torchrun, must still train as one process).
_DISTRIBUTED_ENV = (
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "MPI_LOCALRANKID",
)
THREADS_ENV = "RSM_EVAL_TORCH_THREADS"
_TRAIN_LINE = re.compile(r"Train Epoch: (\d+) \[.*\bLoss: (\S+) \((\S+)\)")


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Source:
    """Training pairs from one `captions` manifest.

    `captions`: the Parquet table written by rsm_eval.manifests; `images`: the image root its
    `image_path`s are relative to; `splits`: which splits to use (None: every row, as for an
    RSM-ITD-style CSV, whose rows all carry the dataset's configured split); `name`: for
    messages and the record (defaults to the manifest's dataset name).
    """

    captions: str
    images: str
    splits: tuple[str, ...] | None = ("train",)
    name: str = ""


@dataclass(frozen=True)
class EvalSplit:
    """An evaluated split that must not share images with the training set."""

    name: str
    captions: str
    split: str = "test"


@dataclass(frozen=True)
class FinetuneParams:
    """Hyper-parameters: everything here enters the fine-tune's address.

    Defaults: AdamW with openCLIP's ViT betas/eps, cosine schedule, weight decay 0.2
    (openCLIP's default), mixed precision on GPU and fp32 on CPU (`precision="auto"`), a 10%
    validation split drawn by image, and RSM-CLIP's ViT-B-32 learning rate and batch size;
    `paper_params(arch)` gives the paper's values for another architecture.
    """

    epochs: int = 10
    lr: float = 2e-5
    batch_size: int = 256
    warmup: int = 0  # steps
    weight_decay: float = 0.2
    val_fraction: float = 0.1
    seed: int = 0
    precision: str = "auto"
    lr_scheduler: str = "cosine"
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        def bad(key: str, want: str) -> RsmEvalError:
            return RsmEvalError(f"finetune.{key}: expected {want}, got {getattr(self, key)!r}")

        for key in ("epochs", "batch_size"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(key, "an integer >= 1")
        for key in ("warmup", "seed"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise bad(key, "an integer >= 0")
        for key in ("lr", "weight_decay", "val_fraction", "beta1", "beta2", "eps"):
            v = getattr(self, key)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise bad(key, "a finite number")
        if self.lr <= 0:
            raise bad("lr", "a number > 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        if not 0 <= self.val_fraction < 1:
            raise bad("val_fraction", "a number in [0, 1)")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise bad("beta1", "0 <= beta1, beta2 < 1 and eps > 0")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"one of {list(PRECISIONS)}")
        if self.lr_scheduler not in SCHEDULERS:
            raise bad("lr_scheduler", f"one of {list(SCHEDULERS)}")
        if self.grad_clip_norm is not None and not (
            isinstance(self.grad_clip_norm, int | float) and self.grad_clip_norm > 0
        ):
            raise bad("grad_clip_norm", "null or a number > 0")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "finetune") -> FinetuneParams:
        """From a config mapping; an unknown key is an error that names it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RsmEvalError(
                f"{where}: unknown hyper-parameter(s) {unknown} (known: {sorted(known)})"
            )
        return cls(**dict(raw))

    def to_dict(self) -> dict[str, Any]:
        # Floats as floats, so that lr: 1 and lr: 1.0 give one address.
        out = asdict(self)
        for key in ("lr", "weight_decay", "val_fraction", "beta1", "beta2", "eps"):
            out[key] = float(out[key])
        if out["grad_clip_norm"] is not None:
            out["grad_clip_norm"] = float(out["grad_clip_norm"])
        return out


def paper_params(arch: str, **overrides: Any) -> FinetuneParams:
    """RSM-CLIP's learning rate and batch size for `arch` (ViT-B-32, ViT-L-14), plus overrides."""
    base = arch.removesuffix("-quickgelu")
    if base not in PAPER_PRESETS:
        raise RsmEvalError(
            f"no RSM-CLIP preset for architecture {arch!r} (presets: {sorted(PAPER_PRESETS)}); "
            "give lr and batch_size explicitly"
        )
    return FinetuneParams(**{**PAPER_PRESETS[base], **overrides})


# ------------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class Pair:
    image_sha256: str
    caption_sha256: str
    caption: str
    path: str  # absolute image path
    image_key: str
    source: str


@dataclass
class TrainingSet:
    """The selected pairs (canonical order) and what was dropped on the way."""

    pairs: list[Pair]
    sources: list[dict[str, Any]]
    dropped: dict[str, int] = field(default_factory=dict)
    overlaps: list[dict[str, str]] = field(default_factory=list)
    test_overlap: str = "refuse"

    def image_names(self) -> dict[str, str]:
        """image sha256 -> one file name (for messages)."""
        out: dict[str, str] = {}
        for p in self.pairs:
            out.setdefault(p.image_sha256, f"{p.source}:{p.image_key}")
        return out


def _read_captions(path: Path | str, what: str):
    path = Path(path)
    if not path.is_file():
        raise RsmEvalError(f"{what}: captions manifest {path} not found")
    return schemas.read_table(path, schemas.CAPTIONS)


def load_pairs(sources: Sequence[Source], *, verify_images: bool = True) -> TrainingSet:
    """Read the selected rows of each manifest, drop unusable captions, check the images.

    Blank captions (old RSITMD train copies have some) and captions that pandas would read as
    missing are dropped and counted. With `verify_images`, every image must exist under its
    root with the sha256 the manifest recorded (hashes are memoised by stat, so this is cheap
    after the first time); a changed image means a stale manifest, which is an error.
    """
    if not sources:
        raise RsmEvalError("finetune: no training sources given")
    pairs: list[Pair] = []
    source_info: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for i, src in enumerate(sources):
        where = f"finetune.sources[{i}]"
        table, meta = _read_captions(src.captions, where)
        rows = table.to_pylist()
        name = src.name or (rows[0]["dataset"] if rows else f"source{i}")
        where = f"{where} ({name})"
        root = Path(src.images)
        if not root.is_dir():
            raise RsmEvalError(f"{where}: image root {root} does not exist or is not a directory")
        present = sorted({r["split"] for r in rows})
        if src.splits is not None:
            if not src.splits:
                raise RsmEvalError(f"{where}: 'splits' is empty; give splits or null for all")
            for s in src.splits:
                if s not in present:
                    raise RsmEvalError(
                        f"{where}: split {s!r} has no rows in {src.captions} "
                        f"(splits present: {present})"
                    )
            rows = [r for r in rows if r["split"] in set(src.splits)]
        kept: list[Pair] = []
        for r in rows:
            cap = r["caption"]
            if not cap.strip():
                dropped["blank_captions"] += 1
                continue
            if cap in _PANDAS_NA:
                dropped["captions_read_as_missing_by_pandas"] += 1
                continue
            if cas.sha256_text(cap) != r["caption_sha256"]:
                raise RsmEvalError(
                    f"{where}: {src.captions}: caption_sha256 of {r['image_key']!r} caption "
                    f"{r['caption_index']} does not match its text; rebuild the manifest"
                )
            kept.append(
                Pair(
                    image_sha256=r["image_sha256"],
                    caption_sha256=r["caption_sha256"],
                    caption=cap,
                    path=os.path.abspath(root / r["image_path"]),
                    image_key=r["image_key"],
                    source=name,
                )
            )
        if verify_images and kept:
            by_path = {p.path: p for p in kept}
            shas = cas.memo().files(list(by_path))
            for (path, p), sha in zip(by_path.items(), shas, strict=True):
                if sha != p.image_sha256:
                    raise RsmEvalError(
                        f"{where}: image {path} has changed since the manifest {src.captions} "
                        "was built (sha256 differs); rebuild the manifest"
                    )
        source_info.append(
            {
                "name": name,
                "splits": list(src.splits) if src.splits is not None else None,
                "manifest_address": meta.get("address"),
                "pairs": len(kept),
                "images": len({p.image_sha256 for p in kept}),
            }
        )
        pairs.extend(kept)
    if not pairs:
        raise RsmEvalError(
            "finetune: the training set is empty (no usable image-caption pairs in "
            f"{[s.captions for s in sources]})"
        )
    pairs.sort(key=lambda p: (p.image_sha256, p.caption_sha256, p.path))
    return TrainingSet(pairs=pairs, sources=source_info, dropped=dict(sorted(dropped.items())))


def evaluated_images(tests: Iterable[EvalSplit]) -> dict[str, dict[str, str]]:
    """Per evaluated split name: image sha256 -> image file name."""
    out: dict[str, dict[str, str]] = {}
    for t in tests:
        table, _ = _read_captions(t.captions, f"finetune.tests.{t.name}")
        names: dict[str, str] = {}
        for r in table.to_pylist():
            if r["split"] == t.split:
                names.setdefault(r["image_sha256"], r["image_key"])
        if not names:
            raise RsmEvalError(
                f"finetune.tests.{t.name}: split {t.split!r} has no rows in {t.captions}"
            )
        out[t.name] = names
    return out


def _named(shas: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    if isinstance(shas, Mapping):
        return {str(k): str(v) for k, v in shas.items()}
    return {str(s): str(s)[:12] for s in shas}


def check_no_test_overlap(
    train_image_sha256s: Mapping[str, str] | Iterable[str],
    test_image_sha256s: Mapping[str, Mapping[str, str] | Iterable[str]],
    allow: bool = False,
    *,
    show: int = 5,
) -> list[dict[str, str]]:
    """Images (by content) that are both in the training set and in an evaluated test split.

    Each argument is a set of image sha256s, or a mapping sha256 -> file name (then messages
    and the result name files); `test_image_sha256s` maps a dataset name to its test images.
    Overlaps are an error naming the first `show` of them, unless `allow`; the list is returned
    either way (sorted by dataset, then sha256) so that a report can say what was allowed.
    """
    train = _named(train_image_sha256s)
    overlaps: list[dict[str, str]] = []
    for dataset in sorted(test_image_sha256s):
        test = _named(test_image_sha256s[dataset])
        for sha in sorted(set(train) & set(test)):
            overlaps.append(
                {
                    "dataset": dataset,
                    "image_sha256": sha,
                    "train_image": train[sha],
                    "test_image": test[sha],
                }
            )
    if overlaps and not allow:
        per_dataset = Counter(o["dataset"] for o in overlaps)
        listed = "; ".join(
            f"{o['train_image']} = {o['dataset']} test image {o['test_image']}"
            for o in overlaps[:show]
        )
        more = f" (+{len(overlaps) - show} more)" if len(overlaps) > show else ""
        counts = ", ".join(f"{n} of {d}" for d, n in sorted(per_dataset.items()))
        raise RsmEvalError(
            f"finetune: the training set contains {len(overlaps)} image(s) of evaluated test "
            f"splits ({counts}), identical by content: {listed}{more}. Training on test images "
            "inflates their scores; exclude them (test_overlap: exclude) or allow them "
            "explicitly (test_overlap: allow)"
        )
    return overlaps


def select(
    sources: Sequence[Source],
    tests: Sequence[EvalSplit] = (),
    test_overlap: str = "refuse",
    *,
    verify_images: bool = True,
) -> TrainingSet:
    """The training set after the test-overlap policy (refuse, exclude or allow)."""
    if test_overlap not in TEST_OVERLAP_POLICIES:
        raise RsmEvalError(
            f"finetune.test_overlap: expected one of {list(TEST_OVERLAP_POLICIES)}, "
            f"got {test_overlap!r}"
        )
    ts = load_pairs(sources, verify_images=verify_images)
    ts.test_overlap = test_overlap
    if tests:
        overlaps = check_no_test_overlap(
            ts.image_names(), evaluated_images(tests), allow=test_overlap != "refuse"
        )
        ts.overlaps = overlaps
        if overlaps and test_overlap == "exclude":
            bad = {o["image_sha256"] for o in overlaps}
            before = len(ts.pairs)
            ts.pairs = [p for p in ts.pairs if p.image_sha256 not in bad]
            ts.dropped["test_overlap_pairs"] = before - len(ts.pairs)
            ts.dropped["test_overlap_images"] = len(bad)
            if not ts.pairs:
                raise RsmEvalError(
                    "finetune: the training set is empty after excluding the images of "
                    "evaluated test splits"
                )
    return ts


def split_train_val(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list, list]:
    """Random validation split by image, a pure function of the image hashes and the seed.

    All captions of an image (and every copy of identical image content) fall on one side.
    At least one image goes to validation when `fraction` > 0 and there are two images.
    """
    images = sorted({p.image_sha256 for p in pairs})
    n_val = round(fraction * len(images))
    if fraction > 0 and len(images) >= 2:
        n_val = max(1, min(n_val, len(images) - 1))
    order = sorted(images, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    val_images = set(order[:n_val])
    train = [p for p in pairs if p.image_sha256 not in val_images]
    val = [p for p in pairs if p.image_sha256 in val_images]
    return train, val


# ----------------------------------------------------------------------------- address


def versions() -> dict[str, str]:
    return {
        "open_clip": models._version("open_clip_torch"),
        "torch": models._version("torch"),
        "torchvision": models._version("torchvision"),
    }


def code() -> str:
    return cas.code_version("rsm_eval.finetune")


def _address_of(ts: TrainingSet, base: Model, params: FinetuneParams) -> str:
    data = cas.digest([[p.image_sha256, p.caption_sha256] for p in ts.pairs])
    return cas.digest(
        {
            "stage": STAGE,
            "code": code(),
            "versions": versions(),
            "base_model": models.address(base),
            "params": params.to_dict(),
            "data": data,
        }
    )


def finetune_address(
    sources: Sequence[Source],
    base: Model,
    params: FinetuneParams,
    *,
    tests: Sequence[EvalSplit] = (),
    test_overlap: str = "refuse",
) -> str:
    """Content address of a fine-tune (what `finetune` would record), without training.

    Under the 'refuse' policy an overlap is not an error here (it is when training).
    """
    policy = "allow" if test_overlap == "refuse" else test_overlap
    ts = select(sources, tests, policy, verify_images=False)
    return _address_of(ts, base, params)


# ---------------------------------------------------------------------------- training


def _write_csv(path: Path, pairs: Sequence[Pair]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["filepath", "title"])
        for p in pairs:
            w.writerow([p.path, p.caption])


def run_open_clip_train(argv: Sequence[str], arch_config: str | None = None) -> int:
    """Entry point of the training subprocess: register a model-config JSON, then train.

    The JSON is registered under the same content-derived name rsm_eval.models uses, which
    `argv` must name with --model.
    """
    argv = list(argv)
    if arch_config:
        name = models._arch_name(Model(name="finetune", arch=arch_config))
        if "--model" not in argv or argv[argv.index("--model") + 1] != name:
            raise RsmEvalError(f"run_open_clip_train: --model must be {name} for {arch_config}")
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from open_clip_train.main import main

    rc = main(argv)
    return 0 if rc in (None, 0) else 1


def _model_name(base: Model) -> str:
    if models.is_config_path(base.arch):
        # Same content-derived name as models._arch_name, without importing open_clip here.
        return f"rsm-eval-{cas.sha256_bytes(Path(base.arch).read_bytes())[:12]}"
    return base.arch


def _base_weights(base: Model, tmp: Path) -> str:
    """What --pretrained gets: a tag as is; otherwise a plain state dict file.

    Weights files are read safely (rsm_eval.models.read_state_dict, any supported format) and
    checked against the architecture; a random init is built exactly as rsm_eval.models builds
    the evaluated random model, so fine-tuning starts from that model and the training seed
    stays independent of the initialisation seed.
    """
    if base.pretrained is not None:
        return base.pretrained
    import torch

    loaded = models.build(base, "cpu")
    path = tmp / "base.pt"
    torch.save(loaded.model.state_dict(), path)
    return str(path)


def _argv(
    *,
    model_name: str,
    pretrained: str,
    base: Model,
    params: FinetuneParams,
    train_csv: Path,
    val_csv: Path | None,
    logs: Path,
    device: str,
    precision: str,
    workers: int,
    log_every: int,
) -> list[str]:
    argv = [
        "--model", model_name,
        "--pretrained", pretrained,
        "--train-data", str(train_csv),
        "--dataset-type", "csv",
        "--csv-img-key", "filepath",
        "--csv-caption-key", "title",
        "--csv-separator", ",",
        "--logs", str(logs),
        "--name", "run",
        "--save-frequency", "0",  # only the last epoch's checkpoint
        "--report-to", "none",
        "--workers", str(workers),
        "--device", device,
        "--precision", precision,
        "--epochs", str(params.epochs),
        "--batch-size", str(params.batch_size),
        "--lr", repr(float(params.lr)),
        "--wd", repr(float(params.weight_decay)),
        "--warmup", str(params.warmup),
        "--lr-scheduler", params.lr_scheduler,
        "--beta1", repr(float(params.beta1)),
        "--beta2", repr(float(params.beta2)),
        "--eps", repr(float(params.eps)),
        "--seed", str(params.seed),
        "--log-every-n-steps", str(log_every),
        "--zeroshot-frequency", "0",
    ]  # fmt: skip
    if val_csv is not None:
        argv += ["--val-data", str(val_csv), "--val-frequency", "1"]
    if params.grad_clip_norm is not None:
        argv += ["--grad-clip-norm", repr(float(params.grad_clip_norm))]
    if base.force_quick_gelu:
        argv += ["--force-quick-gelu"]
    return argv


def _run(
    argv: list[str],
    arch_config: str | None,
    log_path: Path,
    stream: IO[str] | None,
    threads: int | None,
) -> int:
    env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
    if threads is not None:
        env[THREADS_ENV] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    code_line = (
        "import sys; from rsm_eval.finetune import run_open_clip_train as run; "
        "sys.exit(run(sys.argv[2:], sys.argv[1] or None))"
    )
    cmd = [sys.executable, "-c", code_line, arch_config or "", *argv]
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                if stream is not None:
                    stream.write(line)
                    stream.flush()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return proc.wait()


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def parse_logs(run_dir: Path) -> dict[str, Any]:
    """Train loss per epoch (mean of the logged steps) from out.log; val metrics per epoch
    from checkpoints/results.jsonl."""
    losses: dict[int, float] = {}
    log = run_dir / "out.log"
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _TRAIN_LINE.search(line)
            if m:
                losses[int(m.group(1))] = float(m.group(3))
    val: list[dict[str, Any]] = []
    results = run_dir / "checkpoints" / "results.jsonl"
    if results.is_file():
        for line in results.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                val.append(
                    {k: float(v) if isinstance(v, int | float) else v for k, v in entry.items()}
                )
    per_epoch = [losses[e] for e in sorted(losses)]
    return {
        "train_loss": per_epoch[-1] if per_epoch else None,
        "train_loss_per_epoch": per_epoch,
        "val_metrics": val[-1] if val else None,
        "val_metrics_per_epoch": val,
    }


def _save_state_dict(checkpoint: Path, dest: Path) -> str:
    """open_clip training checkpoint -> plain fp32 state dict at `dest` (atomic); its sha256."""
    import torch

    state = models.read_state_dict(checkpoint, key="finetune checkpoint")
    state = {
        k: (v.float() if v.is_floating_point() else v).contiguous().clone()
        for k, v in state.items()
    }
    # Saved through a buffer: torch.save names the archive after the file, and a temporary
    # name would make equal weights give different bytes (and a different model address).
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    with cas.atomic_path(dest, suffix=".pt") as tmp:
        tmp.write_bytes(data)
    return cas.sha256_bytes(data)


def _cache_paths(cache_dir: Path, address: str) -> tuple[Path, Path]:
    d = Path(cache_dir) / STAGE
    return d / f"{address}.pt", d / f"{address}.json"


def _copy_atomic(src: Path, dest: Path) -> None:
    with cas.atomic_path(dest, suffix=dest.suffix) as tmp:
        shutil.copyfile(src, tmp)


def finetune(
    sources: Sequence[Source],
    base: Model,
    params: FinetuneParams,
    out: Path | str,
    *,
    tests: Sequence[EvalSplit] = (),
    test_overlap: str = "refuse",
    record_out: Path | str | None = None,
    device: str = "auto",
    workers: int = 0,
    threads: int | None = None,
    cache_dir: Path | str | None = None,
    logs_out: Path | str | None = None,
    stream: IO[str] | None = sys.stderr,
) -> dict[str, Any]:
    """Fine-tune `base` on the pairs of `sources` with open_clip_train; write the state dict.

    `out` receives a plain state dict (fp32, no 'module.' prefix) that loads into `base`'s
    architecture; the training record (returned) is written to `record_out` (default: `out`
    with suffix .json). `tests`: evaluated splits checked for shared images under
    `test_overlap` ('refuse', 'exclude', 'allow'). `device`: 'auto', 'cuda' or 'cpu';
    `workers`: data-loader workers; `threads`: torch CPU threads of the trainer (give the
    job's core count: more threads than free cores makes CPU training many times slower, as
    every operator waits for the descheduled thread; None: torch's default). With
    `cache_dir`, a fine-tune whose address was trained before is copied from
    `<cache_dir>/finetune/<address>.pt` instead of retrained, and a new one is stored there.
    `logs_out`: a directory to keep open_clip_train's out.log, params.txt and results.jsonl
    in. `stream`: where the trainer's output is echoed.
    """
    t0 = time.monotonic()
    out = Path(out)
    record_out = Path(record_out) if record_out is not None else out.with_suffix(".json")
    if not isinstance(workers, int) or workers < 0:
        raise RsmEvalError(f"finetune.workers: expected an integer >= 0, got {workers!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise RsmEvalError(f"finetune.threads: expected an integer >= 1, got {threads!r}")
    ts = select(sources, tests, test_overlap)
    address = _address_of(ts, base, params)
    base_address = models.address(base)

    if cache_dir is not None:
        cached_pt, cached_json = _cache_paths(Path(cache_dir), address)
        if cached_pt.is_file() and cached_json.is_file():
            try:
                cached = json.loads(cached_json.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                cached = {}
            sha = cached.get("checkpoint", {}).get("sha256")
            if cached.get("address") == address and sha == cas.file_sha256(cached_pt):
                _copy_atomic(cached_pt, out)
                cached["reused"] = True
                cas.write_json_atomic(record_out, cached)
                if stream is not None:
                    print(f"finetune {address}: reused {cached_pt}", file=stream, flush=True)
                return cached

    train, val = split_train_val(ts.pairs, params.val_fraction, params.seed)
    steps_per_epoch = len(train) // params.batch_size
    if steps_per_epoch == 0:
        raise RsmEvalError(
            f"finetune: {len(train)} training pairs are fewer than batch_size="
            f"{params.batch_size} (open_clip_train drops the last partial batch, so no step "
            "would be taken); lower batch_size or add data"
        )
    total_steps = steps_per_epoch * params.epochs
    if params.warmup >= total_steps:
        raise RsmEvalError(
            f"finetune.warmup: {params.warmup} warmup steps but only {total_steps} steps in "
            f"total ({steps_per_epoch} per epoch x {params.epochs} epochs)"
        )
    used_device = models.choose_device(device)
    precision = params.precision
    if precision == "auto":
        precision = "amp" if used_device == "cuda" else "fp32"
    log_every = max(1, steps_per_epoch // 50)

    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside the output, not in /tmp: a ViT-L training checkpoint with optimizer state is GBs.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".finetune", dir=out.parent))
    try:
        train_csv = tmp / "train.csv"
        _write_csv(train_csv, train)
        val_csv = None
        if val:
            val_csv = tmp / "val.csv"
            _write_csv(val_csv, val)
        pretrained = _base_weights(base, tmp)
        arch_config = str(Path(base.arch).resolve()) if models.is_config_path(base.arch) else None
        argv = _argv(
            model_name=_model_name(base),
            pretrained=pretrained,
            base=base,
            params=params,
            train_csv=train_csv,
            val_csv=val_csv,
            logs=tmp / "logs",
            device=used_device,
            precision=precision,
            workers=workers,
            log_every=log_every,
        )
        if stream is not None:
            print(
                f"finetune {address}: {len(train)} train / {len(val)} val pairs, "
                f"{params.epochs} epochs x {steps_per_epoch} steps, device {used_device}, "
                f"precision {precision}",
                file=stream,
                flush=True,
            )
        t_train = time.monotonic()
        console = tmp / "console.log"
        rc = _run(argv, arch_config, console, stream, threads)
        train_seconds = time.monotonic() - t_train
        run_dir = tmp / "logs" / "run"
        checkpoint = run_dir / "checkpoints" / f"epoch_{params.epochs}.pt"
        if rc != 0 or not checkpoint.is_file():
            raise RsmEvalError(
                f"finetune: open_clip_train failed (exit status {rc}"
                + ("" if checkpoint.is_file() else f", no checkpoint {checkpoint.name}")
                + f"); last lines of its output:\n{_tail(console)}"
            )
        parsed = parse_logs(run_dir)
        if logs_out is not None:
            logs_dir = Path(logs_out)
            logs_dir.mkdir(parents=True, exist_ok=True)
            for src in (run_dir / "out.log", run_dir / "params.txt", console):
                if src.is_file():
                    shutil.copyfile(src, logs_dir / src.name)
            results = run_dir / "checkpoints" / "results.jsonl"
            if results.is_file():
                shutil.copyfile(results, logs_dir / results.name)

        staged = tmp / "model.pt"
        sha = _save_state_dict(checkpoint, staged)
        # The contract: the product loads strictly into the base architecture.
        models.build(
            Model(
                name=base.name or "finetuned",
                arch=base.arch,
                weights=str(staged),
                force_quick_gelu=base.force_quick_gelu,
            ),
            "cpu",
        )
        record = {
            "stage": STAGE,
            "address": address,
            "code": code(),
            "versions": versions(),
            "base_model": {
                "name": base.name,
                "address": base_address,
                "arch": base.arch,
                "weights_kind": base.weights_kind,
                "pretrained": base.pretrained,
                "random": base.random,
                "force_quick_gelu": base.force_quick_gelu,
            },
            "params": params.to_dict(),
            "data": {
                "sources": ts.sources,
                "dropped": ts.dropped,
                "test_overlap": {
                    "policy": ts.test_overlap,
                    "checked": [t.name for t in tests],
                    "overlaps": ts.overlaps,
                },
                "n_pairs": len(ts.pairs),
                "n_train_pairs": len(train),
                "n_val_pairs": len(val),
                "n_train_images": len({p.image_sha256 for p in train}),
                "n_val_images": len({p.image_sha256 for p in val}),
            },
            "training": {
                "trainer": "open_clip_train.main",
                "device": used_device,
                "precision": precision,
                "workers": workers,
                "threads": threads,
                "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps,
                **parsed,
                "train_seconds": round(train_seconds, 3),
            },
            "checkpoint": {"sha256": sha, "bytes": staged.stat().st_size},
            "reused": False,
        }
        record["wall_seconds"] = round(time.monotonic() - t0, 3)
        if cache_dir is not None:
            cached_pt, cached_json = _cache_paths(Path(cache_dir), address)
            _copy_atomic(staged, cached_pt)
            cas.write_json_atomic(cached_json, record)
        with cas.atomic_path(out, suffix=".pt") as final:
            os.replace(staged, final)
        cas.write_json_atomic(record_out, record)
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
