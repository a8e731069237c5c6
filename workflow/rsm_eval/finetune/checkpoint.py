"""The product: a plain state dict written byte-reproducibly, checked, cached by address.

open_clip_train's checkpoint (`{'epoch', 'name', 'state_dict', 'optimizer'}`) becomes a plain
fp32 state dict (no 'module.' prefix) that `rsm_eval.models.build` loads as `weights:` of the
base architecture. With a cache directory, a finished fine-tune is stored under its address
(`<cache_dir>/finetune/<address>.pt` and `.json`) and found again instead of retrained.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import cas, models
from ..config import Model
from .record import STAGE


def save_state_dict(checkpoint: Path, dest: Path) -> str:
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


def check_loads(weights: Path, base: Model) -> None:
    """The contract: the product loads strictly into the base architecture."""
    models.build(
        Model(
            name=base.name or "finetuned",
            arch=base.arch,
            weights=str(weights),
            force_quick_gelu=base.force_quick_gelu,
        ),
        "cpu",
    )


def copy_atomic(src: Path, dest: Path) -> None:
    with cas.atomic_path(dest, suffix=dest.suffix) as tmp:
        shutil.copyfile(src, tmp)


@dataclass(frozen=True)
class Cache:
    """Where the fine-tune of one address is kept in a cache directory."""

    root: Path
    address: str

    @property
    def weights(self) -> Path:
        return Path(self.root) / STAGE / f"{self.address}.pt"

    @property
    def record(self) -> Path:
        return Path(self.root) / STAGE / f"{self.address}.json"

    def reuse(self, out: Path, record_out: Path, stream: IO[str] | None) -> dict[str, Any] | None:
        """Copy a cached fine-tune of this address to `out` and its record (marked reused) to
        `record_out`; None when there is none, or its weights do not match its record."""
        if not (self.weights.is_file() and self.record.is_file()):
            return None
        try:
            cached = json.loads(self.record.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            cached = {}
        sha = cached.get("checkpoint", {}).get("sha256")
        if cached.get("address") != self.address or sha != cas.file_sha256(self.weights):
            return None
        copy_atomic(self.weights, out)
        cached["reused"] = True
        cas.write_json_atomic(record_out, cached)
        if stream is not None:
            print(f"finetune {self.address}: reused {self.weights}", file=stream, flush=True)
        return cached

    def store(self, weights: Path, record: dict[str, Any]) -> None:
        copy_atomic(weights, self.weights)
        cas.write_json_atomic(self.record, record)
