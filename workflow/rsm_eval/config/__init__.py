"""Load, validate and normalise the workflow configuration; resolve what to evaluate.

The JSON schema in workflow/schemas/config.schema.yaml is the contract (config.schema);
the result is typed (config.types), one dataclass per entry and section, built from the
validated mapping with the schema's defaults filled in, so the rest of the package never
guesses and no default is written twice.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import RsmEvalError
from ..paths import finetune_weights
from .schema import SCHEMA_PATH, validate
from .types import (
    LOCALIZATION_PARAMS,
    SCENE_FORMATS,
    SOURCES_DIR,
    Classification,
    Config,
    Dataset,
    Demo,
    Embed,
    Evaluation,
    FetchSpec,
    Leakage,
    LeakageTrain,
    LinearProbe,
    Localization,
    LocalizationDataset,
    LocalizationDemo,
    Model,
    SceneEvaluation,
    Statistics,
)

__all__ = [
    "LOCALIZATION_PARAMS",
    "SCENE_FORMATS",
    "SCHEMA_PATH",
    "SOURCES_DIR",
    "Classification",
    "Config",
    "Dataset",
    "Demo",
    "Embed",
    "Evaluation",
    "FetchSpec",
    "Leakage",
    "LeakageTrain",
    "LinearProbe",
    "Localization",
    "LocalizationDataset",
    "LocalizationDemo",
    "Model",
    "SceneEvaluation",
    "Statistics",
    "finetune_weights",
    "load",
    "load_file",
    "registry",
    "validate",
    "without_sources",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
REGISTRY_PATH = DATA_DIR / "registry.yaml"
TEMPLATES_PATH = DATA_DIR / "templates.yaml"


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
    from .. import hub

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


def _source_path(key: str, value: Any, is_dir: bool, sources: dict[str, FetchSpec]) -> str:
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
    sources[dest] = FetchSpec(key=key, entry=entry, dest=dest, is_dir=is_dir)
    return dest


def _attach_layout(ds: Dataset, sources: dict[str, FetchSpec]) -> None:
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
    key: str, names: list[str], entries: list[dict[str, Any]], sources: dict[str, FetchSpec]
) -> str:
    """Sources for the files of one directory (a hub repo); each file has its own key
    (`<key>/<file>`), hence its own entry in the sources lock. Returns the directory."""
    folder = f"{SOURCES_DIR}/{key.replace('.', '/')}"
    for file, entry in zip(names, entries, strict=True):
        dest = f"{folder}/{file}"
        sources[dest] = FetchSpec(key=f"{key}/{file}", entry=dict(entry), dest=dest, is_dir=False)
    return folder


def load(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate and normalise a configuration mapping (as Snakemake's `config`)."""
    cfg = validate(raw, source)
    sources: dict[str, FetchSpec] = {}
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
        embed=Embed(**cfg["embed"]),
        statistics=Statistics(**cfg["statistics"]),
        classification=_classification(cfg["classification"]),
        demo=Demo(**cfg["demo"]),
        sources=sources,
        finetunes=finetunes,
        leakage=_leakage(cfg.get("leakage")),
        localization=localization,
        scene_evaluations=tuple(dict.fromkeys(scene_evaluations)),
        published_tolerance=cfg["published_tolerance"],
        sources_lock=cfg["sources_lock"],
        refresh_lock=cfg["refresh_lock"],
    )


def _classification(section: dict[str, Any]) -> Classification:
    probe = dict(section["linear_probe"])
    probe.update(shots=tuple(probe["shots"]), C=tuple(probe["C"]))
    return Classification(
        enabled=section["enabled"],
        templates=tuple(section["templates"]),
        linear_probe=LinearProbe(**probe),
    )


def _leakage(section: dict[str, Any] | None) -> Leakage | None:
    if section is None:
        return None
    train = tuple(LeakageTrain(**t) for t in section.get("train", []))
    return Leakage(**{**section, "train": train})


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
    sources: dict[str, FetchSpec],
    source: str,
) -> Localization | None:
    """The `localization` section with local paths for its sources and its models checked."""
    if not loc:
        return None
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
        datasets[name] = LocalizationDataset(name=name, **entry)
    chosen = loc.get("models", list(models))
    for i, name in enumerate(chosen):
        if name not in models:
            raise RsmEvalError(
                f"{source}: localization.models.{i}: unknown model {name!r} "
                f"(configured: {', '.join(models)})"
            )
    settings = {k: v for k, v in loc.items() if k not in ("datasets", "models", "demo")}
    return Localization(
        datasets=datasets,
        models=tuple(dict.fromkeys(chosen)),
        **{**settings, "windows": tuple(settings["windows"])},
        demo=LocalizationDemo(**loc["demo"]) if "demo" in loc else None,
    )


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
    if localization is not None:
        localization = replace(
            localization,
            datasets={n: d for n, d in localization.datasets.items() if n not in loc_dropped},
            models=tuple(m for m in localization.models if m not in dropped["models"]),
        )
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
