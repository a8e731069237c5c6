"""The normalised configuration: one frozen dataclass per entry and per section.

Built by rsm_eval.config.load from the schema-validated mapping, so every field has its
value (the schema's default when the user gave none); nothing here repeats a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..jsonspec import JsonSpec

# Scene-classification formats (rsm_eval.scenes); the others are caption (retrieval) formats.
SCENE_FORMATS = ("class-folders", "label-csv")
# Where fetched sources land: results/sources/<kind>/<name>/<field>/<file name>.
SOURCES_DIR = "results/sources"


@dataclass(frozen=True)
class FetchSpec(JsonSpec):
    """A config source that a `fetch` job materialises at `dest` (or that is used in place);
    also what the plan passes to that job (`to_json`, read back with `from_json`)."""

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
class Dataset(JsonSpec):
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
class Model(JsonSpec):
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
class Statistics(JsonSpec):
    """Bootstrap over test images (`statistics`)."""

    n_resamples: int
    seed: int
    level: float


@dataclass(frozen=True)
class LeakageTrain:
    dataset: str
    split: str | None = None

    @property
    def label(self) -> str:
        return f"{self.dataset}:{self.split or 'all'}"


@dataclass(frozen=True)
class Leakage:
    """The leakage audit (`leakage`); absent from Config when the section is."""

    train: tuple[LeakageTrain, ...]
    max_hamming: int
    cosine_threshold: float
    confirm_with: str | None = None


@dataclass(frozen=True)
class LinearProbe(JsonSpec):
    enabled: bool
    shots: tuple[int, ...]
    full: bool
    seeds: int
    C: tuple[float, ...]
    test_fraction: float
    max_iter: int


@dataclass(frozen=True)
class Classification:
    enabled: bool
    templates: tuple[str, ...]
    linear_probe: LinearProbe


@dataclass(frozen=True)
class LocalizationDataset:
    """An AIR-SLT-style set with local paths (`root` when given as one folder)."""

    name: str
    annotations: str
    images: str
    published: str
    root: str | None = None
    expected: dict[str, int] = field(default_factory=dict)
    label: str = ""

    @property
    def paths(self) -> list[str]:
        """What the workflow reads: the folder, or the annotation file and the images."""
        return [self.root] if self.root is not None else [self.annotations, self.images]


@dataclass(frozen=True)
class LocalizationDemo:
    out: str
    seed: int
    width: int
    height: int


# The localize stage's parameters (localize.DEFAULT_PARAMS): what changes a map.
LOCALIZATION_PARAMS = (
    "windows",
    "crop_size",
    "crop_jpeg_quality",
    "median_blur",
    "probmap_jpeg_quality",
)


@dataclass(frozen=True)
class Localization:
    """Semantic localization (`localization`); absent from Config when the section is."""

    datasets: dict[str, LocalizationDataset]
    models: tuple[str, ...]
    windows: tuple[int, ...]
    crop_size: int
    crop_jpeg_quality: int | None
    probmap_jpeg_quality: int | None
    median_blur: int
    figures: int
    threads: int | None = None
    demo: LocalizationDemo | None = None

    def params(self) -> dict[str, Any]:
        """The map parameters as JSON values (tuples as lists: what a spec reads back)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k in LOCALIZATION_PARAMS
            for v in [getattr(self, k)]
        }


@dataclass(frozen=True)
class Embed:
    """Feature extraction (`embed`), shared by every job that runs a model."""

    batch_size: int
    workers: int | None
    threads: int | None
    shards: int | dict[str, int]
    device: str
    chunk_rows: int


@dataclass(frozen=True)
class Demo:
    """The bundled demo benchmark (`demo`)."""

    seed: int
    out: str
    n_train: int
    n_val: int
    n_test: int
    n_csv_images: int


@dataclass(frozen=True)
class Config:
    raw: dict[str, Any]
    datasets: dict[str, Dataset]
    models: dict[str, Model]
    evaluations: tuple[Evaluation, ...]
    cache_dir: str
    embed: Embed
    statistics: Statistics
    classification: Classification
    demo: Demo
    # Defaults for these come from the schema (workflow/schemas/config.schema.yaml) only.
    published_tolerance: float
    sources_lock: str
    refresh_lock: bool
    sources: dict[str, FetchSpec] = field(default_factory=dict)
    finetunes: dict[str, dict[str, Any]] = field(default_factory=dict)
    leakage: Leakage | None = None
    localization: Localization | None = None
    scene_evaluations: tuple[SceneEvaluation, ...] = ()

    def scene_pairs(self) -> list[tuple[str, str]]:
        """Distinct (model, scene dataset) pairs that need scene features."""
        return sorted({(e.model, e.dataset) for e in self.scene_evaluations})

    def model_datasets(self) -> list[tuple[str, str]]:
        """Distinct (model, dataset) pairs that need features."""
        return sorted({(e.model, e.dataset) for e in self.evaluations})
