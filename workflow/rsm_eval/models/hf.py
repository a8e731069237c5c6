"""The transformers backend: CLIP (`CLIPModel`) and SigLIP (`SiglipModel`) from a directory
that `save_pretrained` wrote (a hub repo's files, fetched by the source layer).

Features are `get_image_features` / `get_text_features` (the projected pooled outputs; a
`BaseModelOutputWithPooling` in transformers 5, a tensor in 4.x). Text goes in as token ids
alone, without an attention mask: CLIP's text tower is causal and pools at the end-of-text
token, so padding after it cannot change a feature; SigLIP's is bidirectional and pools the
last position, and was trained on captions padded to 64 tokens with no mask. transformers 5's
SiglipTokenizer also returns an attention_mask, and passing it changes SigLIP's text features
(tests/test_models_hf.py shows it); the authors' transformers 4 code passed none.

SigLIP's head is a sigmoid of `scale * cosine + bias` rather than a softmax over cosines.
Both are increasing in the cosine, so rankings (retrieval) and arg-maxes (zero-shot
classification) over L2-normalised features are the same; the protocols are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Model
from ..errors import RsmEvalError
from . import Loaded, check_activation, preprocess

MODEL_CLASSES = {"clip": "CLIPModel", "siglip": "SiglipModel"}


class Tokenize:
    """texts -> input ids (LongTensor), padded as the text spec says; picklable for workers."""

    def __init__(self, tokenizer: Any, spec: dict[str, Any]):
        self.tokenizer, self.spec = tokenizer, spec

    def __call__(self, texts: list[str]) -> Any:
        out = self.tokenizer(
            [self.spec["prefix"] + t for t in texts],
            padding=self.spec["padding"],
            max_length=self.spec["max_length"],
            truncation=True,
            return_tensors="pt",
        )
        return out["input_ids"]


def features(out: Any) -> Any:
    """The feature tensor of get_*_features in transformers 4 (a tensor) and 5 (an output)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise RsmEvalError(f"transformers returned {type(out).__name__} without pooler_output")
    return pooled


def _activation(config: Any) -> str:
    acts = {getattr(config, t).hidden_act for t in ("text_config", "vision_config")}
    return acts.pop() if len(acts) == 1 else "+".join(sorted(acts))


def _dim(config: Any, family: str, where: str) -> int:
    """The shared embedding width; SigLIP's image features are the vision tower's width."""
    if family == "clip":
        return int(config.projection_dim)
    text = getattr(config.text_config, "projection_size", None) or config.text_config.hidden_size
    if int(text) != int(config.vision_config.hidden_size):
        raise RsmEvalError(
            f"{where}: SigLIP text features have {text} dimensions, image features "
            f"{config.vision_config.hidden_size}; they cannot be compared"
        )
    return int(text)


def build(model: Model, device: str = "cpu") -> Loaded:
    import torch
    import transformers

    where = f"models.{model.name}"
    if model.weights is None:
        raise RsmEvalError(
            f"{where}: a transformers model needs `hub` (a repo id) or `weights` (a directory "
            "written by save_pretrained)"
        )
    path = Path(model.weights)
    if not (path / "config.json").is_file():
        raise RsmEvalError(f"{where}.weights: {path} has no config.json (save_pretrained layout)")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RsmEvalError(f"{where}.weights: cannot read {path / 'config.json'}: {exc}") from None
    if config.model_type != model.arch:
        raise RsmEvalError(
            f"{where}.arch: configured family {model.arch!r}, but {path / 'config.json'} is a "
            f"{config.model_type!r} model"
        )
    activation = _activation(config)
    check_activation(model, activation, f"{path / 'config.json'} (hidden_act)")
    try:
        net = transformers.AutoModel.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise RsmEvalError(f"{where}.weights: cannot load {path}: {exc}") from None
    if type(net).__name__ != MODEL_CLASSES[model.arch]:
        raise RsmEvalError(
            f"{where}: {path} loads as {type(net).__name__}, not a CLIP/SigLIP model"
        )
    net = net.to(device).eval()

    image_defaults: dict[str, Any] = {}
    pre_path = path / "preprocessor_config.json"
    if pre_path.is_file():
        pre = json.loads(pre_path.read_text(encoding="utf-8"))
        image_defaults = preprocess.from_transformers(pre, f"{where}: {pre_path}")
    image_spec = preprocess.merge_image(image_defaults, model.preprocess, where)

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RsmEvalError(f"{where}.weights: cannot load the tokenizer of {path}: {exc}") from None
    positions = int(config.text_config.max_position_embeddings)
    limit = getattr(tokenizer, "model_max_length", positions)
    text_spec = preprocess.merge_text(
        {"padding": "max_length", "max_length": min(positions, limit)}, model.text
    )
    if text_spec["max_length"] > positions:
        raise RsmEvalError(
            f"{where}.text.max_length: {text_spec['max_length']} exceeds the model's "
            f"{positions} positions"
        )

    def encode_image(pixels: Any) -> Any:
        return features(net.get_image_features(pixel_values=pixels))

    def encode_text(ids: Any) -> Any:
        return features(net.get_text_features(input_ids=ids))

    return Loaded(
        model=net,
        preprocess=preprocess.image_transform(image_spec),
        tokenizer=Tokenize(tokenizer, text_spec),
        arch=model.arch,
        quick_gelu=activation == "quick_gelu",
        dim=_dim(config, model.arch, where),
        backend="transformers",
        activation=activation,
        image_spec=image_spec,
        text_spec=text_spec,
        image_fn=encode_image,
        text_fn=encode_text,
    )
