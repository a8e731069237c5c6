"""Checkpoint files: read safely (never executing pickled code), load strictly."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RsmEvalError

if TYPE_CHECKING:
    import torch


def _is_torchscript(zf: zipfile.ZipFile) -> bool:
    names = zf.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def read_state_dict(path: Path, *, key: str = "weights") -> dict[str, torch.Tensor]:
    """Read a checkpoint safely: raw state dict, open_clip training checkpoint, safetensors,
    or a zip holding one of these. Never executes pickled code (weights_only=True)."""
    import torch

    if not path.is_file():
        raise RsmEvalError(f"{key}: checkpoint {path} not found")
    with open(path, "rb") as fh:
        head = fh.read(16)
    data: bytes | None = None
    name = path.name
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if _is_torchscript(zf):
                raise RsmEvalError(
                    f"{key}: {path} is a TorchScript archive, not a state dict (a failed or "
                    "JIT-exported download, e.g. of RemoteCLIP); download the plain .pt again"
                )
            is_torch_zip = any(n.endswith("/data.pkl") for n in zf.namelist())
            if not is_torch_zip:
                members = [
                    n
                    for n in zf.namelist()
                    if n.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
                ]
                if len(members) != 1:
                    raise RsmEvalError(
                        f"{key}: zip {path} must hold exactly one checkpoint "
                        f"(.pt/.pth/.bin/.safetensors/.ckpt), found {members or zf.namelist()[:10]}"
                    )
                data = zf.read(members[0])
                name = members[0]
                head = data[:16]
    if name.endswith(".safetensors") or _looks_like_safetensors(head):
        from safetensors import SafetensorError
        from safetensors.torch import load, load_file

        try:
            state = load(data) if data is not None else load_file(str(path))
        except (SafetensorError, ValueError, OSError) as exc:
            raise RsmEvalError(f"{key}: {path} is not a valid safetensors file ({exc})") from None
    else:
        src: Any = io.BytesIO(data) if data is not None else str(path)
        try:
            obj = torch.load(src, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise RsmEvalError(
                f"{key}: {path} needs arbitrary code to unpickle and was refused (weights_only "
                f"loading). Only plain tensors are accepted from checkpoints. Detail: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        except RuntimeError as exc:
            msg = str(exc)
            if "TorchScript" in msg or "constants.pkl" in msg:
                raise RsmEvalError(
                    f"{key}: {path} is a TorchScript archive, not a state dict"
                ) from None
            raise RsmEvalError(
                f"{key}: {path} is not a readable torch checkpoint ({msg})"
            ) from None
        except (EOFError, OSError, zipfile.BadZipFile) as exc:
            raise RsmEvalError(f"{key}: {path} is truncated or corrupt ({exc})") from None
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state:
        raise RsmEvalError(
            f"{key}: {path} does not hold a state dict (found {type(state).__name__})"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise RsmEvalError(f"{key}: {path}: non-tensor entries in state dict: {bad[:10]}")
    # Training checkpoints saved from DistributedDataParallel prefix every key with 'module.'.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < (1 << 30) and head[8:9] == b"{"


def load_state_dict(net: Any, state: dict[str, Any], *, where: str) -> None:
    """Load strictly; list missing, unexpected and mis-shaped keys instead of half-loading."""
    own = net.state_dict()
    state = dict(state)
    # Older checkpoints store logit_scale as a 0-d tensor, newer models as 1-d (or vice versa).
    if "logit_scale" in state and "logit_scale" in own:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 20} more)" if len(items) > 20 else ""
                parts.append(f"{label} keys: {', '.join(items[:20])}{more}")
        raise RsmEvalError(
            f"{where}: checkpoint does not match the configured architecture; " + "; ".join(parts)
        )
    net.load_state_dict(state, strict=True)
