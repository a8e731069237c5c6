"""Load, validate and normalise the workflow configuration; resolve what to evaluate.

The JSON schema in workflow/schemas/config.schema.yaml is the contract. Validation errors
name the key path (`models.rsm-clip.weigths`) and what was expected; defaults from the
schema are filled in so the rest of the package never guesses.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import RsmEvalError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
REGISTRY_PATH = Path(__file__).resolve().parent / "data" / "registry.yaml"
TEMPLATES_PATH = Path(__file__).resolve().parent / "data" / "templates.yaml"
# Scene-classification formats (rsm_eval.scenes); the others are caption (retrieval) formats.
SCENE_FORMATS = ("class-folders", "label-csv")
# Where fetched sources land: results/sources/<kind>/<name>/<field>/<file name>.
SOURCES_DIR = "results/sources"


@dataclass(frozen=True)
class SourceSpec:
    """A config source that a `fetch` job materialises at `dest` (or that is used in place)."""

    key: str  # config key, e.g. "models.rsm-clip.weights"
    entry: dict[str, Any]  # the config mapping (url | path, mirrors, sha256, member, ...)
    dest: str  # local path the rest of the workflow reads
    is_dir: bool
    # How the dataset reads it (sources.layout.Layout): lets a fetch job find the annotation
    # file and image folder inside an archive by content.
    layout: dict[str, Any] | None = None

    @property
    def fetched(self) -> bool:
        """True when a job must download or extract it; False for a plain manual path."""
        return any(k in self.entry for k in ("url", "member", "recipe"))


@dataclass(frozen=True)
class Dataset:
    name: str
    format: str
    annotations: str
    images: str
    split: str = "test"
    label: str = ""
    encoding: str = "utf-8"
    csv_separator: str = ","
    columns: dict[str, str] = field(default_factory=dict)
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    max_image_pixels: int = 100_000_000
    published: str = ""
    evaluate: bool = True
    # Scene datasets: class-name overrides and the template sets evaluated by default.
    classnames: dict[str, str] = field(default_factory=dict)
    templates: tuple[str, ...] = ("single",)
    # Retrieval splits: where scene labels come from (file names, or UCM-Captions' numbers).
    image_labels: str = "file-names"

    @property
    def is_scene(self) -> bool:
        return self.format in SCENE_FORMATS

    def params(self) -> dict[str, Any]:
        """What changes the manifest besides the file contents (paths excluded on purpose)."""
        return {
            "name": self.name,
            "format": self.format,
            "split": self.split,
            "encoding": self.encoding,
            "csv_separator": self.csv_separator,
            "columns": dict(sorted(self.columns.items())),
            "expected": self.expected,
            "max_image_pixels": self.max_image_pixels,
        }  # `evaluate` and `published` change what is done with it, not its manifest


@dataclass(frozen=True)
class Model:
    name: str
    arch: str
    weights: str | None = None
    pretrained: str | None = None
    random: int | None = None
    force_quick_gelu: bool = False
    label: str = ""
    registry: str | None = None
    published: dict[str, str] | None = None
    # The model interface (rsm_eval.models): which library runs it and how inputs are prepared.
    backend: str = "open_clip"
    activation: str | None = None  # declared activation, checked against the built model
    preprocess: dict[str, Any] | None = None  # image: size, resize, crop, interpolation, mean, std
    text: dict[str, Any] | None = None  # text: prefix, padding, max_length
    hub: str | None = None  # Hugging Face repo the files come from (informative)
    revision: str | None = None
    files: list[str] | None = None  # files of a `weights` directory (a transformers repo)

    @property
    def weights_kind(self) -> str:
        if self.weights is not None:
            return "file"
        if self.pretrained is not None:
            return "pretrained"
        return "random"


@dataclass(frozen=True)
class Evaluation:
    model: str
    dataset: str
    protocol: str = "remoteclip"
    autocast: bool = False

    @property
    def variant(self) -> str:
        """File-name part that tells evaluations of one model x dataset apart."""
        return self.protocol + ("-autocast" if self.autocast else "")


@dataclass(frozen=True)
class SceneEvaluation:
    """Zero-shot classification of a scene dataset by one model with one template set."""

    model: str
    dataset: str
    templates: str


@dataclass(frozen=True)
class Config:
    raw: dict[str, Any]
    datasets: dict[str, Dataset]
    models: dict[str, Model]
    evaluations: tuple[Evaluation, ...]
    cache_dir: str
    embed: dict[str, Any]
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    finetunes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Semantic localization: {"datasets": {name: entry with local paths}, "models": [...]}.
    localization: dict[str, Any] = field(default_factory=dict)
    scene_evaluations: tuple[SceneEvaluation, ...] = ()

    def scene_pairs(self) -> list[tuple[str, str]]:
        """Distinct (model, scene dataset) pairs that need scene features."""
        return sorted({(e.model, e.dataset) for e in self.scene_evaluations})

    def model_datasets(self) -> list[tuple[str, str]]:
        """Distinct (model, dataset) pairs that need features."""
        return sorted({(e.model, e.dataset) for e in self.evaluations})


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill `default`s from the schema into `instance` (jsonschema validates, it does not fill)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root["$defs"][name]
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
            if sub.get("type") == "array" and isinstance(instance[key], list):
                for item in instance[key]:
                    _fill_defaults(item, sub.get("items", {}), root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def validate(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate against the schema; return a copy with defaults filled in."""
    if not isinstance(raw, dict):
        raise RsmEvalError(
            f"{source}: expected a mapping at the top level, got {type(raw).__name__}"
        )
    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors[:10]:
            msg = err.message
            if err.validator == "additionalProperties":
                allowed = sorted(err.schema.get("properties", {}))
                msg += f" (allowed keys: {', '.join(allowed)})"
            elif err.validator == "oneOf":
                msg = "expected a path (string) or a source mapping with 'url' or 'path'"
            lines.append(f"  {_key_path(err)}: {msg}")
        raise RsmEvalError(f"{source}: invalid configuration\n" + "\n".join(lines))
    filled = copy.deepcopy(raw)
    _fill_defaults(filled, schema, schema)
    return filled


def finetune_weights(name: str) -> str:
    return f"results/finetune/{name}/model.pt"


def registry() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(REGISTRY_PATH.read_text(encoding="utf-8"))


def _resolve_model(name: str, entry: dict[str, Any], source: str) -> dict[str, Any]:
    """Fill a model entry from the registry (config fields win) and check its weights."""
    entry = dict(entry)
    if "registry" in entry:
        known = registry()
        if entry["registry"] not in known:
            raise RsmEvalError(
                f"{source}: models.{name}.registry: unknown registry entry "
                f"{entry['registry']!r} (known: {', '.join(known)})"
            )
        base = copy.deepcopy(known[entry["registry"]])
        # An explicit weight source in config replaces the registry's one.
        if {"weights", "pretrained", "random"} & set(entry):
            for k in ("weights", "pretrained", "random"):
                base.pop(k, None)
        entry = {**base, **entry}
    from . import hub

    try:
        entry = hub.expand(f"models.{name}", entry)
    except hub.HubError as exc:
        raise RsmEvalError(f"{source}: {exc}") from None
    if "arch" not in entry:
        raise RsmEvalError(f"{source}: models.{name}: needs 'arch' (or a 'registry' entry)")
    given = [k for k in ("weights", "pretrained", "random") if k in entry]
    if len(given) != 1:
        raise RsmEvalError(
            f"{source}: models.{name}: a model needs exactly one of 'weights', 'pretrained' or "
            f"'random' (found {given or 'none'})"
        )
    return entry


def _source_path(key: str, value: Any, is_dir: bool, sources: dict[str, SourceSpec]) -> str:
    """The local path for a config value that is a path or a source mapping."""
    if isinstance(value, str):
        return value
    entry = dict(value)
    if any(k in entry for k in ("url", "member", "recipe")):
        origin = entry.get("member") or entry.get("url") or entry.get("path")
        leaf = Path(origin.rstrip("/").split("?", 1)[0]).name or "data"
        if is_dir:  # a folder unpacked from an archive is not named like the archive
            leaf = re.sub(r"\.(zip|rar|tar|tgz|tar\.(gz|bz2|xz))$", "", leaf) or "data"
        dest = f"{SOURCES_DIR}/{key.replace('.', '/')}/{leaf}"
    else:
        dest = entry["path"]
    sources[dest] = SourceSpec(key=key, entry=entry, dest=dest, is_dir=is_dir)
    return dest


def _attach_layout(ds: Dataset, sources: dict[str, SourceSpec]) -> None:
    """Tell a dataset's fetched sources how its annotations name its images."""
    if ds.format not in ("karpathy-json", "csv"):
        return
    read = {
        "format": ds.format,
        "encoding": ds.encoding,
        "separator": ds.csv_separator,
        "columns": dict(ds.columns),
    }
    for dest, role in ((ds.annotations, "annotations"), (ds.images, "images")):
        spec = sources.get(dest)
        if spec is not None and spec.fetched:
            extra = {"annotations": ds.annotations} if role == "images" else {}
            sources[dest] = replace(spec, layout={"role": role, **read, **extra})


def _directory_sources(
    key: str, names: list[str], entries: list[dict[str, Any]], sources: dict[str, SourceSpec]
) -> str:
    """Sources for the files of one directory (a hub repo); each file has its own key
    (`<key>/<file>`), hence its own entry in the sources lock. Returns the directory."""
    folder = f"{SOURCES_DIR}/{key.replace('.', '/')}"
    for file, entry in zip(names, entries, strict=True):
        dest = f"{folder}/{file}"
        sources[dest] = SourceSpec(key=f"{key}/{file}", entry=dict(entry), dest=dest, is_dir=False)
    return folder


def load(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate and normalise a configuration mapping (as Snakemake's `config`)."""
    cfg = validate(raw, source)
    sources: dict[str, SourceSpec] = {}
    datasets = {}
    for name, entry in cfg["datasets"].items():
        entry = dict(entry)
        entry.setdefault("published", name)
        if entry["format"] == "class-folders":
            entry.setdefault("annotations", "")
            if "split" not in raw["datasets"][name]:
                entry["split"] = "all"  # a class-folder dataset has one split
        for fld, is_dir in (("annotations", False), ("images", True)):
            if entry[fld] != "":
                entry[fld] = _source_path(f"datasets.{name}.{fld}", entry[fld], is_dir, sources)
        if "templates" in entry:
            entry["templates"] = tuple(entry["templates"])
            _check_template_sets(entry["templates"], f"{source}: datasets.{name}.templates")
        datasets[name] = Dataset(name=name, **entry)
        _attach_layout(datasets[name], sources)
    models = {}
    for name, entry in cfg["models"].items():
        entry = _resolve_model(name, entry, source)
        if isinstance(entry["arch"], dict):  # a model config fetched from a hub
            entry["arch"] = _source_path(f"models.{name}.arch", entry["arch"], False, sources)
        if isinstance(entry.get("weights"), list):  # files of one directory (a hub repo)
            entry["weights"] = _directory_sources(
                f"models.{name}.weights", entry["files"], entry["weights"], sources
            )
        elif "weights" in entry:
            entry["weights"] = _source_path(
                f"models.{name}.weights", entry["weights"], False, sources
            )
        models[name] = Model(name=name, **entry)
    finetunes = cfg.get("finetunes") or {}
    for name, ft in finetunes.items():
        where = f"{source}: finetunes.{name}"
        if name in models:
            raise RsmEvalError(f"{where}: a model of that name is already configured")
        if ft["base"] not in models:
            raise RsmEvalError(f"{where}.base: unknown model {ft['base']!r}")
        for ds in [s_["dataset"] for s_ in ft["sources"]] + list(ft.get("tests", [])):
            if ds not in datasets:
                raise RsmEvalError(f"{where}: unknown dataset {ds!r}")
            if datasets[ds].is_scene:
                raise RsmEvalError(f"{where}: {ds!r} is a scene dataset, not a caption dataset")
        base = models[ft["base"]]
        if base.backend != "open_clip":
            raise RsmEvalError(
                f"{where}.base: fine-tuning runs open_clip_train; {ft['base']!r} "
                f"is a {base.backend} model"
            )
        # The trained weights are a product of the workflow, evaluated like any checkpoint.
        models[name] = Model(
            name=name,
            arch=base.arch,
            weights=finetune_weights(name),
            force_quick_gelu=base.force_quick_gelu,
            activation=base.activation,
            preprocess=base.preprocess,
            text=base.text,
            label=f"{ft['base']} fine-tuned",
        )
    confirm_with = (cfg.get("leakage") or {}).get("confirm_with")
    if confirm_with is not None and confirm_with not in models:
        raise RsmEvalError(f"{source}: leakage.confirm_with: unknown model {confirm_with!r}")
    for i, t in enumerate((cfg.get("leakage") or {}).get("train", [])):
        if t["dataset"] not in datasets:
            raise RsmEvalError(
                f"{source}: leakage.train.{i}.dataset: unknown dataset {t['dataset']!r} "
                f"(configured: {', '.join(datasets)})"
            )
        if datasets[t["dataset"]].is_scene:
            raise RsmEvalError(
                f"{source}: leakage.train.{i}.dataset: {t['dataset']!r} is a scene dataset; the "
                "audit reads caption manifests"
            )
    scene_evaluations: list[SceneEvaluation] = []
    localization = _localization(cfg.get("localization"), models, sources, source)
    if "evaluations" in cfg:
        evaluations = []
        for i, ev in enumerate(cfg["evaluations"]):
            if ev["model"] not in models:
                raise RsmEvalError(
                    f"{source}: evaluations.{i}.model: unknown model {ev['model']!r} "
                    f"(configured: {', '.join(models)})"
                )
            if ev["dataset"] not in datasets:
                raise RsmEvalError(
                    f"{source}: evaluations.{i}.dataset: unknown dataset {ev['dataset']!r} "
                    f"(configured: {', '.join(datasets)})"
                )
            if datasets[ev["dataset"]].is_scene:
                scene_evaluations += _scene_evaluations(ev, datasets, f"{source}: evaluations.{i}")
                continue
            if "templates" in ev:
                raise RsmEvalError(
                    f"{source}: evaluations.{i}.templates: only for scene datasets "
                    f"({', '.join(SCENE_FORMATS)}); {ev['dataset']!r} is "
                    f"{datasets[ev['dataset']].format}"
                )
            evaluations.append(Evaluation(**ev))
    else:
        evaluations = [
            Evaluation(model=m, dataset=d)
            for m in models
            for d, ds in datasets.items()
            if ds.evaluate and not ds.is_scene
        ]
        scene_evaluations = [
            SceneEvaluation(model=m, dataset=d, templates=t)
            for m in models
            for d, ds in datasets.items()
            if ds.evaluate and ds.is_scene
            for t in ds.templates
        ]
    return Config(
        raw=cfg,
        datasets=datasets,
        models=models,
        evaluations=tuple(dict.fromkeys(evaluations)),
        cache_dir=cfg["cache_dir"],
        embed=cfg["embed"],
        sources=sources,
        finetunes=finetunes,
        localization=localization,
        scene_evaluations=tuple(dict.fromkeys(scene_evaluations)),
    )


def _check_template_sets(names: tuple[str, ...], where: str) -> None:
    known = yaml.safe_load(TEMPLATES_PATH.read_text(encoding="utf-8"))
    for n in names:
        if n not in known:
            raise RsmEvalError(f"{where}: unknown template set {n!r} (known: {', '.join(known)})")


def _scene_evaluations(
    ev: dict[str, Any], datasets: dict[str, Dataset], where: str
) -> list[SceneEvaluation]:
    """An evaluation of a scene dataset: its `templates`, or the dataset's template sets."""
    if ev.get("protocol", "remoteclip") != "remoteclip" or ev.get("autocast"):
        raise RsmEvalError(f"{where}: protocol and autocast apply to retrieval datasets only")
    names = (ev["templates"],) if "templates" in ev else datasets[ev["dataset"]].templates
    _check_template_sets(tuple(names), f"{where}.templates")
    return [SceneEvaluation(model=ev["model"], dataset=ev["dataset"], templates=t) for t in names]


def _localization(
    loc: dict[str, Any] | None,
    models: dict[str, Model],
    sources: dict[str, SourceSpec],
    source: str,
) -> dict[str, Any]:
    """The `localization` section with local paths for its sources and its models checked."""
    if not loc:
        return {}
    datasets = {}
    for name, entry in loc["datasets"].items():
        entry = dict(entry)
        entry.setdefault("published", name)
        where = f"{source}: localization.datasets.{name}"
        if "root" in entry:
            if "annotations" in entry or "images" in entry:
                raise RsmEvalError(f"{where}: give either 'root' or 'annotations' and 'images'")
            root = _source_path(f"localization.datasets.{name}.root", entry["root"], True, sources)
            entry.update(
                root=root, annotations=f"{root}/annotations/anno.json", images=f"{root}/imgs"
            )
        elif "annotations" in entry and "images" in entry:
            for fld, is_dir in (("annotations", False), ("images", True)):
                key = f"localization.datasets.{name}.{fld}"
                entry[fld] = _source_path(key, entry[fld], is_dir, sources)
        else:
            raise RsmEvalError(f"{where}: needs 'root', or both 'annotations' and 'images'")
        datasets[name] = entry
    chosen = loc.get("models", list(models))
    for i, name in enumerate(chosen):
        if name not in models:
            raise RsmEvalError(
                f"{source}: localization.models.{i}: unknown model {name!r} "
                f"(configured: {', '.join(models)})"
            )
    return {"datasets": datasets, "models": list(dict.fromkeys(chosen))}


def without_sources(cfg: Config, keys: Iterable[str]) -> Config:
    """`cfg` less every evaluation that reads one of the source `keys` (config keys such as
    `datasets.aid.images` or `models.x.weights`): what a dry run can still plan."""
    dropped: dict[str, set[str]] = {"datasets": set(), "models": set()}
    loc_dropped: set[str] = set()
    for key in keys:
        parts = key.split(".")
        if parts[0] in dropped:
            dropped[parts[0]].add(parts[1])
        elif parts[:2] == ["localization", "datasets"]:
            loc_dropped.add(parts[2])

    def kept(e: Any) -> bool:
        return e.dataset not in dropped["datasets"] and e.model not in dropped["models"]

    localization = cfg.localization
    if localization:
        localization = {
            "datasets": {n: d for n, d in localization["datasets"].items() if n not in loc_dropped},
            "models": [m for m in localization["models"] if m not in dropped["models"]],
        }
    return replace(
        cfg,
        evaluations=tuple(e for e in cfg.evaluations if kept(e)),
        scene_evaluations=tuple(e for e in cfg.scene_evaluations if kept(e)),
        localization=localization,
    )


def load_file(path: Path | str) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RsmEvalError(f"{path}: cannot read configuration ({exc})") from None
    return load(raw, str(path))
