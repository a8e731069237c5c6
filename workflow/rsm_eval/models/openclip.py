"""The open_clip backend: open_clip names, model-config JSONs (plain or a hub repo's
`open_clip_config.json`), checkpoints in any supported format, the activation check."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from .. import cas
from ..config import Model
from ..errors import RsmEvalError
from . import Loaded, check_activation, is_config_path, preprocess
from .checkpoints import load_state_dict, read_state_dict


def _read_config(model: Model) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, preprocess config) of a model-config JSON path."""
    path = Path(model.arch)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RsmEvalError(
            f"models.{model.name}.arch: cannot read model config {path}: {exc}"
        ) from None
    pre: dict[str, Any] = {}
    if isinstance(cfg, dict) and "model_cfg" in cfg:  # a hub repo's open_clip_config.json
        pre = cfg.get("preprocess_cfg") or {}
        cfg = cfg["model_cfg"]
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if not isinstance(cfg, dict) or key not in cfg:
            raise RsmEvalError(f"models.{model.name}.arch: {path} lacks {key!r} (open_clip config)")
    return cfg, pre


def arch_name(model: Model) -> str:
    """Register a model-config JSON with open_clip (under a content-derived name)."""
    if not is_config_path(model.arch):
        return model.arch
    import open_clip

    cfg, _ = _read_config(model)
    if (cfg.get("text_cfg") or {}).get("hf_tokenizer_name"):
        raise RsmEvalError(
            f"models.{model.name}.arch: {model.arch} uses the Hugging Face tokenizer "
            f"{cfg['text_cfg']['hf_tokenizer_name']!r}, which open_clip would download at run "
            "time, outside the checksum lock; such models are not supported here"
        )
    # open_clip registers a config file under its stem; a content-derived stem avoids
    # clashes between two users' "tiny.json".
    name = f"rsm-eval-{cas.sha256_bytes(Path(model.arch).read_bytes())[:12]}"
    if name not in open_clip.list_models():
        tmp = Path(tempfile.mkdtemp(prefix="rsm-eval-arch-"))
        (tmp / f"{name}.json").write_text(json.dumps(cfg), encoding="utf-8")
        open_clip.add_model_config(tmp / f"{name}.json")
    return name


class Prefixed:
    """A tokenizer that prepends the model's caption prefix (picklable, for loader workers)."""

    def __init__(self, tokenizer: Any, prefix: str):
        self.tokenizer, self.prefix = tokenizer, prefix

    def __call__(self, texts: list[str]) -> Any:
        return self.tokenizer([self.prefix + t for t in texts])


def built_activation(net: Any) -> str:
    """The activation of the network's transformer MLPs: quick_gelu, gelu or mixed/none."""
    from open_clip.transformer import QuickGELU
    from torch import nn

    found = set()
    for module in net.modules():
        if isinstance(module, QuickGELU):
            found.add("quick_gelu")
        elif isinstance(module, nn.GELU):
            found.add("gelu_pytorch_tanh" if module.approximate == "tanh" else "gelu")
    if len(found) == 1:
        return found.pop()
    return "+".join(sorted(found)) or "none"


def build(model: Model, device: str = "cpu") -> Loaded:
    import open_clip
    import torch

    where = f"models.{model.name}"
    arch = arch_name(model)
    if arch not in open_clip.list_models():
        raise RsmEvalError(
            f"{where}.arch: {model.arch!r} is neither an open_clip model name nor a "
            "model-config .json path"
        )
    kwargs: dict[str, Any] = {"force_quick_gelu": model.force_quick_gelu, "precision": "fp32"}
    if model.random is not None:
        torch.manual_seed(model.random)
    try:
        net = open_clip.create_model(arch, pretrained=model.pretrained, device="cpu", **kwargs)
    except RuntimeError as exc:
        raise RsmEvalError(f"{where}: cannot build {arch!r}: {exc}") from None
    activation = built_activation(net)
    how = f"arch {model.arch!r} with force_quick_gelu {model.force_quick_gelu}"
    check_activation(model, activation, how)
    if model.weights is not None:
        state = read_state_dict(Path(model.weights), key=f"{where}.weights")
        load_state_dict(net, state, where=f"{where}.weights ({model.weights})")
    net = net.to(device).eval()
    cfg = open_clip.get_model_config(arch) or {}
    defaults = dict(open_clip.get_model_preprocess_cfg(net))
    if is_config_path(model.arch):
        defaults.update(_read_config(model)[1])
    image_spec = preprocess.merge_image(
        preprocess.from_open_clip(defaults), model.preprocess, where
    )
    context = int(net.context_length)
    text_spec = preprocess.merge_text({"padding": "max_length", "max_length": context}, model.text)
    if text_spec["padding"] != "max_length" or text_spec["max_length"] != context:
        raise RsmEvalError(
            f"{where}.text: open_clip pads every caption to the model's context of {context} "
            f"tokens (got padding {text_spec['padding']!r}, max_length {text_spec['max_length']})"
        )
    tokenizer = open_clip.get_tokenizer(arch)
    prefix = text_spec["prefix"]
    return Loaded(
        model=net,
        preprocess=preprocess.image_transform(image_spec),
        tokenizer=Prefixed(tokenizer, prefix) if prefix else tokenizer,
        arch=arch,
        quick_gelu=activation == "quick_gelu",
        dim=int(cfg.get("embed_dim", 0)),
        backend="open_clip",
        activation=activation,
        image_spec=image_spec,
        text_spec=text_spec,
    )
