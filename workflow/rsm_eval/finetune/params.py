"""Hyper-parameters of a fine-tune: validated, canonical (they enter its address), and presets.

RSM-CLIP's recipe is AdamW with a cosine schedule; `PAPER_PRESETS` holds its learning rate and
batch size per architecture, the rest keeps openCLIP's defaults for ViTs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import RsmEvalError

PAPER_PRESETS: dict[str, dict[str, Any]] = {
    "ViT-B-32": {"lr": 2e-5, "batch_size": 256},
    "ViT-L-14": {"lr": 1e-6, "batch_size": 32},
}

PRECISIONS = ("auto", "amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32")
SCHEDULERS = ("cosine", "const")
# Written as floats in the address, so that lr: 1 and lr: 1.0 give one address.
_FLOATS = ("lr", "weight_decay", "val_fraction", "beta1", "beta2", "eps")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


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

        for key, least in (("epochs", 1), ("batch_size", 1), ("warmup", 0), ("seed", 0)):
            if not _is_int(getattr(self, key)) or getattr(self, key) < least:
                raise bad(key, f"an integer >= {least}")
        for key in _FLOATS:
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
        """Canonical form (floats as floats): what the address and the record hold."""
        out = asdict(self)
        for key in _FLOATS:
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
