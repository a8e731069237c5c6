"""Models: one interface over open_clip and transformers; registry, checkpoints, addresses.

A built model is a `Loaded`: `preprocess` (PIL image -> tensor), `tokenize` (texts -> token
ids), `encode_image`, `encode_text` (unnormalised features; the embedding stage L2-normalises).
Two backends implement it: `openclip` (open_clip models, RSM-CLIP, RemoteCLIP, GeoRSCLIP,
SkyCLIP, FarSLIP) and `hf` (transformers CLIP and SigLIP, e.g. Git-RSCLIP). Preprocessing is
data (`preprocess.py`): resize mode, crop, interpolation, mean/std, text padding and prefix.

The activation trap (ANCHORS.md): open_clip >= 2.29 builds `ViT-B-32` with nn.GELU even for
OpenAI-derived weights, and RSM-CLIP, RemoteCLIP and GeoRSCLIP were all fine-tuned from OpenAI
CLIP with QuickGELU. The activation has no parameters, so a state dict loads either way and
gives wrong numbers silently. The architecture therefore comes from config (or the registry),
never from the weights, and it is part of the model's address; a model whose registry entry
declares an `activation` is refused when what is built differs.

Torch, open_clip and transformers are imported lazily: the Snakefile computes model addresses
at DAG-build time and must not pay for importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import cas
from ..config import Model
from ..errors import RsmEvalError
from .checkpoints import load_state_dict, read_state_dict

__all__ = [
    "FEATURE_VERSION",
    "Loaded",
    "address",
    "address_spec",
    "build",
    "choose_device",
    "is_config_path",
    "load_state_dict",
    "read_state_dict",
]

# Bump when the numbers an embedding produces change for the same weights and inputs
# (preprocessing, pooling, precision handling). It is part of every feature's address.
FEATURE_VERSION = 1
BACKENDS = ("open_clip", "transformers")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def is_config_path(arch: str) -> bool:
    return arch.endswith(".json")


def address(model: Model, precision: str = "fp32") -> str:
    return cas.digest(address_spec(model, precision))


def _weights_spec(model: Model) -> Any:
    path = Path(model.weights)  # type: ignore[arg-type]
    where = f"models.{model.name}.weights"
    if model.files:
        missing = [f for f in model.files if not (path / f).is_file()]
        if missing:
            raise RsmEvalError(f"{where}: {', '.join(missing)} not found in {path}")
        return {"files": {f: cas.memo().file(path / f) for f in sorted(model.files)}}
    if path.is_dir():
        return {"tree": cas.memo().tree(path)}
    if not path.is_file():
        raise RsmEvalError(
            f"{where}: checkpoint {path} not found; put the file there or fix the path in config"
        )
    return {"sha256": cas.file_sha256(path)}


def address_spec(model: Model, precision: str = "fp32") -> dict[str, Any]:
    """What a model's content address is made of; cheap (no torch import).

    Made of: the backend, the architecture (a registered name, or the bytes of a model-config
    JSON), the activation, the weights (checkpoint bytes, pretrained tag, or random seed), the
    configured preprocessing, the library versions that compute the forward pass, and
    FEATURE_VERSION. Not the model's name or the checkpoint's path. Keys that only non-default
    settings add (backend, preprocess, text) are left out otherwise, so open_clip addresses
    made before the model interface still hold.
    """
    if model.backend not in BACKENDS:
        raise RsmEvalError(
            f"models.{model.name}.backend: {model.backend!r} is not one of {', '.join(BACKENDS)}"
        )
    if is_config_path(model.arch):
        arch: Any = {"config_sha256": cas.file_sha256(model.arch)}
    else:
        arch = {"name": model.arch}
    weights: Any
    if model.weights is not None:
        weights = _weights_spec(model)
    elif model.pretrained is not None:
        weights = {"pretrained": model.pretrained}
    else:
        # Random init depends on torch's RNG implementation, hence the torch version below.
        weights = {"random": model.random}
    spec: dict[str, Any] = {
        "arch": arch,
        "force_quick_gelu": model.force_quick_gelu,
        "weights": weights,
        "precision": precision,
        "open_clip": _version("open_clip_torch"),  # also the image transform of both backends
        "torch": _version("torch"),
        "feature_version": FEATURE_VERSION,
    }
    if model.backend != "open_clip":
        spec["backend"] = model.backend
        spec["transformers"] = _version("transformers")
        spec["tokenizers"] = _version("tokenizers")
        spec["sentencepiece"] = _version("sentencepiece")
    for key in ("preprocess", "text"):
        if getattr(model, key):
            spec[key] = dict(sorted(getattr(model, key).items()))
    return spec


@dataclass
class Loaded:
    """A model ready to embed, with the transforms that belong to it (the model interface).

    `model` is the backend's network (an open_clip CLIP or a transformers CLIPModel /
    SiglipModel); callers outside the backends use the four methods and the specs only.
    """

    model: Any
    preprocess: Any  # PIL image -> float tensor (C, H, W)
    tokenizer: Callable[[list[str]], Any]  # texts -> LongTensor (n, length), prefix applied
    arch: str
    quick_gelu: bool
    dim: int
    backend: str = "open_clip"
    activation: str = ""
    image_spec: dict[str, Any] = field(default_factory=dict)
    text_spec: dict[str, Any] = field(default_factory=dict)
    image_fn: Callable[[Any], Any] | None = None
    text_fn: Callable[[Any], Any] | None = None

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(texts)

    def encode_image(self, pixels: Any) -> Any:
        fn = self.image_fn or self.model.encode_image
        return fn(pixels)

    def encode_text(self, tokens: Any) -> Any:
        fn = self.text_fn or self.model.encode_text
        return fn(tokens)


def check_activation(model: Model, built: str, how: str) -> None:
    """Refuse a model whose built activation differs from the one its entry declares."""
    if model.activation is None or model.activation == built:
        return
    hint = (
        " Set force_quick_gelu: true (or use a -quickgelu architecture)."
        if model.activation == "quick_gelu" and model.backend == "open_clip"
        else ""
    )
    raise RsmEvalError(
        f"models.{model.name}: the weights were trained with activation {model.activation!r} "
        f"(registry/config `activation`), but {how} builds {built!r}; features would be "
        f"silently wrong.{hint}"
    )


def build(model: Model, device: str = "cpu") -> Loaded:
    """Instantiate a configured model in eval mode, fp32, on `device`."""
    if model.backend == "transformers":
        from . import hf

        return hf.build(model, device)
    if model.backend != "open_clip":
        raise RsmEvalError(
            f"models.{model.name}.backend: {model.backend!r} is not one of {', '.join(BACKENDS)}"
        )
    from . import openclip

    return openclip.build(model, device)


def _arch_name(model: Model) -> str:
    from . import openclip

    return openclip.arch_name(model)


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
