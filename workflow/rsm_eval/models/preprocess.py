"""Preprocessing as data: one image transform and one text spec, whatever the backend.

An image spec is `{size, resize, crop, interpolation, mean, std}`; a text spec is
`{prefix, padding, max_length}`. Each backend supplies its model's own defaults (open_clip's
preprocess config, a transformers repo's `preprocessor_config.json` and tokenizer), config
(or the registry) overrides any field, and the merged spec is what runs and what is recorded.
The image transform is open_clip's eval transform (`open_clip.image_transform`) for both
backends, so the same spec gives the same pixels: `resize: shortest` is torchvision's
shortest-side resize then a centre crop (RemoteCLIP's protocol), `squash` resizes to
size x size with no crop (SigLIP's processor), `longest` fits the longest side and pads.
"""

from __future__ import annotations

from typing import Any

from ..errors import RsmEvalError

IMAGE_KEYS = ("size", "resize", "crop", "interpolation", "mean", "std")
TEXT_KEYS = ("prefix", "padding", "max_length")
# The crop each resize mode implies in open_clip's eval transform.
CROP_OF = {"shortest": "center", "longest": "center", "squash": "none"}
# PIL resampling codes as transformers' preprocessor configs store them.
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def merge_image(defaults: dict[str, Any], overrides: dict[str, Any] | None, where: str) -> dict:
    """The complete image spec: the model's defaults with config's fields on top, checked."""
    spec = {**defaults, **(overrides or {})}
    if "crop" not in (overrides or {}) and "resize" in spec:
        spec["crop"] = CROP_OF.get(spec["resize"], spec.get("crop"))
    missing = [k for k in IMAGE_KEYS if spec.get(k) is None]
    if missing:
        raise RsmEvalError(f"{where}.preprocess: no value for {', '.join(missing)}")
    if spec["resize"] not in CROP_OF:
        raise RsmEvalError(
            f"{where}.preprocess.resize: {spec['resize']!r} is not one of {', '.join(CROP_OF)}"
        )
    if spec["crop"] != CROP_OF[spec["resize"]]:
        raise RsmEvalError(
            f"{where}.preprocess: resize {spec['resize']!r} goes with crop "
            f"{CROP_OF[spec['resize']]!r}, not {spec['crop']!r} (the transform would not give "
            "a square input)"
        )
    if spec["interpolation"] not in ("bicubic", "bilinear"):
        raise RsmEvalError(
            f"{where}.preprocess.interpolation: {spec['interpolation']!r} is not bicubic or "
            "bilinear"
        )
    for k in ("mean", "std"):
        if len(spec[k]) != 3:
            raise RsmEvalError(f"{where}.preprocess.{k}: expected 3 values, got {spec[k]}")
        spec[k] = [float(v) for v in spec[k]]
    size = spec["size"]
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise RsmEvalError(f"{where}.preprocess.size: expected a square size, got {size}")
        size = size[0]
    spec["size"] = int(size)
    return {k: spec[k] for k in IMAGE_KEYS}


def merge_text(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict:
    spec = {"prefix": "", **defaults, **(overrides or {})}
    return {k: spec.get(k) for k in TEXT_KEYS}


def image_transform(spec: dict[str, Any]):
    """open_clip's eval transform for a complete image spec."""
    import open_clip

    return open_clip.image_transform(
        spec["size"],
        is_train=False,
        mean=tuple(spec["mean"]),
        std=tuple(spec["std"]),
        resize_mode=spec["resize"],
        interpolation=spec["interpolation"],
    )


def from_open_clip(cfg: dict[str, Any]) -> dict[str, Any]:
    """Image defaults from open_clip's preprocess config (`get_model_preprocess_cfg`)."""
    resize = cfg.get("resize_mode", "shortest")
    return {
        "size": cfg.get("size", 224),
        "resize": resize,
        "crop": CROP_OF.get(resize),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "mean": list(cfg["mean"]) if "mean" in cfg else None,
        "std": list(cfg["std"]) if "std" in cfg else None,
    }


def from_transformers(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    """Image defaults from a transformers `preprocessor_config.json` (CLIP and SigLIP kinds).

    Supported: resize to `{height, width}` (square, no crop) or `{shortest_edge}` followed by a
    centre crop to the same size, PIL bicubic/bilinear resampling, rescale by 1/255, normalise.
    Anything else is refused rather than approximated."""
    size = cfg.get("size") or {}
    crop = cfg.get("crop_size") or {}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if not cfg.get("do_resize", True) or not cfg.get("do_normalize", True):
        raise RsmEvalError(f"{where}: preprocessor config without resize or normalize")
    if abs(float(cfg.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9 or not cfg.get(
        "do_rescale", True
    ):
        raise RsmEvalError(f"{where}: preprocessor config rescales by other than 1/255")
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if "shortest_edge" in size:
        n = size["shortest_edge"]
        if (
            not cfg.get("do_center_crop", False)
            or crop.get("height", n) != n
            or crop.get("width", n) != n
        ):
            raise RsmEvalError(
                f"{where}: preprocessor config resizes the shortest edge to {n} without a "
                f"centre crop to {n} (crop_size {crop}); not supported"
            )
        resize = "shortest"
    elif "height" in size and "width" in size:
        if size["height"] != size["width"]:
            raise RsmEvalError(f"{where}: preprocessor config size {size} is not square")
        n = size["height"]
        if cfg.get("do_center_crop", False) and (crop.get("height", n), crop.get("width", n)) != (
            n,
            n,
        ):
            raise RsmEvalError(f"{where}: preprocessor config crops after a squash; not supported")
        resize = "squash"
    else:
        raise RsmEvalError(f"{where}: preprocessor config size {size!r} not understood")
    resample = cfg.get("resample", 3)
    if resample not in _PIL_RESAMPLE:
        raise RsmEvalError(f"{where}: preprocessor config resample {resample} not supported")
    return {
        "size": n,
        "resize": resize,
        "crop": CROP_OF[resize],
        "interpolation": _PIL_RESAMPLE[resample],
        "mean": cfg.get("image_mean"),
        "std": cfg.get("image_std"),
    }
