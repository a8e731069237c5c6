"""Models: architecture resolution, checkpoint formats, QuickGELU, safe loading, addresses.

The activation trap (ANCHORS.md): open_clip >= 2.29 builds `ViT-B-32` with nn.GELU even for
OpenAI-derived weights, and RSM-CLIP, RemoteCLIP and GeoRSCLIP were all fine-tuned from OpenAI
CLIP with QuickGELU. The activation has no parameters, so a state dict loads either way and
gives wrong numbers silently. The architecture therefore comes from config (or the registry),
never from the weights, and it is part of the model's address.

Torch and open_clip are imported lazily: the Snakefile computes model addresses at DAG-build
time and must not pay for importing torch.
"""

from __future__ import annotations

import io
import json
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cas
from .config import Model
from .errors import RsmEvalError

if TYPE_CHECKING:
    import torch

# Bump when the numbers an embedding produces change for the same weights and inputs
# (preprocessing, pooling, precision handling). It is part of every feature's address.
FEATURE_VERSION = 1


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def is_config_path(arch: str) -> bool:
    return arch.endswith(".json")


def address(model: Model, precision: str = "fp32") -> str:
    return cas.digest(address_spec(model, precision))


def address_spec(model: Model, precision: str = "fp32") -> dict[str, Any]:
    """What a model's content address is made of; cheap (no torch import).

    Made of: the architecture (a registered name, or the bytes of a model-config JSON), the
    activation, the weights (checkpoint bytes, pretrained tag, or random seed), the library
    versions that compute the forward pass, and FEATURE_VERSION. Not the model's name or
    the checkpoint's path.
    """
    if is_config_path(model.arch):
        arch: Any = {"config_sha256": cas.file_sha256(model.arch)}
    else:
        arch = {"name": model.arch}
    weights: Any
    if model.weights is not None:
        path = Path(model.weights)
        if not path.is_file():
            raise RsmEvalError(
                f"models.{model.name}.weights: checkpoint {path} not found; put the file there or "
                "fix the path in config"
            )
        weights = {"sha256": cas.file_sha256(path)}
    elif model.pretrained is not None:
        weights = {"pretrained": model.pretrained}
    else:
        # Random init depends on torch's RNG implementation, hence the torch version below.
        weights = {"random": model.random}
    return {
        "arch": arch,
        "force_quick_gelu": model.force_quick_gelu,
        "weights": weights,
        "precision": precision,
        "open_clip": _version("open_clip_torch"),
        "torch": _version("torch"),
        "feature_version": FEATURE_VERSION,
    }


def _arch_name(model: Model) -> str:
    """Register a model-config JSON with open_clip (under a content-derived name)."""
    if not is_config_path(model.arch):
        return model.arch
    import open_clip

    path = Path(model.arch)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RsmEvalError(
            f"models.{model.name}.arch: cannot read model config {path}: {exc}"
        ) from None
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise RsmEvalError(f"models.{model.name}.arch: {path} lacks {key!r} (open_clip config)")
    # open_clip registers a config file under its stem; a content-derived stem avoids
    # clashes between two users' "tiny.json".
    name = f"rsm-eval-{cas.sha256_bytes(path.read_bytes())[:12]}"
    if name not in open_clip.list_models():
        tmp = Path(tempfile.mkdtemp(prefix="rsm-eval-arch-"))
        (tmp / f"{name}.json").write_text(json.dumps(cfg), encoding="utf-8")
        open_clip.add_model_config(tmp / f"{name}.json")
    return name


@dataclass
class Loaded:
    """A model ready to embed, with the transforms that belong to it."""

    model: Any
    preprocess: Any
    tokenizer: Any
    arch: str
    quick_gelu: bool
    dim: int


def build(model: Model, device: str = "cpu") -> Loaded:
    """Instantiate a configured model in eval mode, fp32, on `device`."""
    import open_clip
    import torch

    arch = _arch_name(model)
    if arch not in open_clip.list_models():
        raise RsmEvalError(
            f"models.{model.name}.arch: {model.arch!r} is neither an open_clip model name nor a "
            "model-config .json path"
        )
    kwargs: dict[str, Any] = {"force_quick_gelu": model.force_quick_gelu, "precision": "fp32"}
    if model.random is not None:
        torch.manual_seed(model.random)
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=model.pretrained, device="cpu", **kwargs
        )
    except RuntimeError as exc:
        raise RsmEvalError(f"models.{model.name}: cannot build {arch!r}: {exc}") from None
    if model.weights is not None:
        state = read_state_dict(Path(model.weights), key=f"models.{model.name}.weights")
        load_state_dict(net, state, where=f"models.{model.name}.weights ({model.weights})")
    net = net.to(device).eval()
    cfg = open_clip.get_model_config(arch) or {}
    return Loaded(
        model=net,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(arch),
        arch=arch,
        quick_gelu=bool(cfg.get("quick_gelu", False) or model.force_quick_gelu),
        dim=int(cfg.get("embed_dim", 0)),
    )


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


def choose_device(preference: str = "auto") -> str:
    """'cpu', 'cuda' or 'cuda:<i>' for a preference of auto, cpu, cuda or cuda:<i>."""
    import torch

    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RsmEvalError(f"embed.device: {preference!r} requested but no CUDA device is visible")
    if preference.startswith("cuda:"):
        torch.cuda.set_device(int(preference[5:]))
        return preference
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        return "cuda"
    return "cpu"
