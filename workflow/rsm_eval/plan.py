"""The workflow's plan: what to make, from which inputs, and what each job is told.

Pure Python (no Snakemake import), built from the loaded configuration: the Snakefile's
rules read their targets, inputs and specs from one `Plan`, and workflow/rules/common.smk
only adapts it to Snakemake (wildcards in, WorkflowError out). Paths come from
rsm_eval.paths, specs are rsm_eval.specs classes (the stage reads them with from_json).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from functools import cached_property
from pathlib import Path

from . import cas, paths
from . import config as rsm_config
from . import models as rsm_models
from .errors import RsmEvalError
from .protocols import PROTOCOLS, parse_variant
from .specs import FinetuneSpec, HashTable, LeakageSpec, LocalizationSpec, TestSet, TrainingSet

# Stage -> its module: the stage's code version is derived from that module's import closure
# (cas.code_version). A new stage adds one line here. The report's sections (localize_report,
# scene_report) are in the report's closure.
STAGE_MODULES = {
    "manifest": "manifests",
    "embed": "embeddings",
    "evaluate": "evaluate",
    "statistics": "stats",
    "report": "report",
    "leakage": "leakage",
    "finetune": "finetune",
    "classify": "classify",
    "localize": "localize",
    "scene_manifest": "scenes",
    "scene_eval": "scene_eval",
    "probe": "probe",
}
# Wildcard values: configured names, protocol variants (protocols.parse_variant), shards.
NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"
VARIANT = f"({'|'.join(PROTOCOLS)})(-autocast)?"
SHARD = r"\d+-of-\d+"


def code_versions() -> dict[str, str]:
    """Version of the code behind each stage: a rule reruns when its stage's code, or any
    module of the package that code uses, changes."""
    return {stage: cas.code_version(f"rsm_eval.{m}") for stage, m in STAGE_MODULES.items()}


def model_threads(configured: int | None, cores: int | None, n_gpus: int | None) -> int:
    """CPUs of a job that runs a model (embed, classify, leakage confirmation, fine-tuning).

    embed.threads when configured, else all of --cores split between the GPUs of
    --resources gpu=N (1 when --cores is unknown: a cluster profile's set-threads sizes the
    job). Snakemake caps it to --cores and exports it as OMP_NUM_THREADS; under SLURM the
    profile's cpus_per_gpu sizes the allocation, and the stage uses what SLURM gives
    (gpus.plan_cpu).
    """
    if configured:
        return configured
    return max(1, (cores or 1) // (n_gpus or 1))


def is_product(path: str) -> bool:
    """True for what a rule makes (under results/), False for a file the user gave."""
    return Path(path).resolve().is_relative_to(Path(paths.RESULTS).resolve())


def source_address(path: str) -> str:
    """Content address of a user's file or folder (memoised by stat); products are tracked
    by Snakemake itself."""
    if is_product(path):
        return "product"
    if os.path.isdir(path):
        return cas.memo().tree(path)
    return cas.memo().file(path)


def _either(names: list[str]) -> str:
    """A regex matching exactly these names (and nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "$^"


class Plan:
    def __init__(self, cfg: rsm_config.Config):
        self.cfg = cfg
        self.shards = self._shard_counts()

    # -- targets -------------------------------------------------------------------------

    @cached_property
    def metrics_files(self) -> list[str]:
        return [paths.METRICS.format(**self._ev(e)) for e in self.cfg.evaluations]

    @cached_property
    def ranks_files(self) -> list[str]:
        return [paths.RANKS.format(**self._ev(e)) for e in self.cfg.evaluations]

    @cached_property
    def summary_files(self) -> list[str]:
        return sorted({paths.SUMMARY.format(dataset=e.dataset) for e in self.cfg.evaluations})

    @cached_property
    def clean_metrics_files(self) -> list[str]:
        """Metrics without the leaked test images: the published protocol, when audited."""
        if self.cfg.leakage is None:
            return []
        return [
            paths.CLEAN_METRICS.format(**self._ev(e))
            for e in self.cfg.evaluations
            if e.protocol == "remoteclip" and not e.autocast
        ]

    @cached_property
    def audit_files(self) -> list[str]:
        return [paths.AUDIT] if self.cfg.leakage is not None else []

    @cached_property
    def classification_files(self) -> list[str]:
        if not self.cfg.classification.enabled:
            return []
        return sorted(
            {paths.CLASSIFICATION.format(model=m, dataset=d) for m, d in self.cfg.model_datasets()}
        )

    @cached_property
    def scene_files(self) -> list[str]:
        """Scene classification: manifests, zero-shot per model and template set, probes."""
        evs = self.cfg.scene_evaluations
        files = sorted({paths.SCENE_SUMMARY.format(dataset=e.dataset) for e in evs})
        files += [
            paths.ZEROSHOT.format(dataset=e.dataset, model=e.model, templates=e.templates)
            for e in evs
        ]
        if self.cfg.classification.linear_probe.enabled:
            files += [paths.PROBE.format(dataset=d, model=m) for m, d in self.cfg.scene_pairs()]
        return files

    @cached_property
    def finetune_records(self) -> list[str]:
        return [paths.FINETUNE_RECORD.format(name=n) for n in self.cfg.finetunes]

    @cached_property
    def localization_files(self) -> list[str]:
        loc = self.cfg.localization
        if loc is None:
            return []
        return [
            paths.LOCALIZATION_METRICS.format(model=m, dataset=d)
            for d in loc.datasets
            for m in loc.models
        ]

    report_files = paths.REPORT_FILES

    @staticmethod
    def _ev(e: rsm_config.Evaluation) -> dict[str, str]:
        return {"model": e.model, "dataset": e.dataset, "variant": e.variant}

    # -- what the user must provide ------------------------------------------------------

    def used_paths(self) -> list[tuple[str, str]]:
        """(config key, local path) of every file the requested evaluations read."""
        cfg = self.cfg
        out = []
        evaluated = list(cfg.evaluations) + list(cfg.scene_evaluations)
        for name in sorted({e.dataset for e in evaluated}):
            ds = cfg.datasets[name]
            if ds.annotations:  # a class-folder dataset has none
                out += [(f"datasets.{name}.annotations", ds.annotations)]
            out += [(f"datasets.{name}.images", ds.images)]
        loc = cfg.localization
        for name, lds in sorted(loc.datasets.items()) if loc else []:
            fields = ("root",) if lds.root is not None else ("annotations", "images")
            out += [(f"localization.datasets.{name}.{f}", getattr(lds, f)) for f in fields]
        localized = set(loc.models) if loc else set()
        for name in sorted({e.model for e in evaluated} | localized):
            m = cfg.models[name]
            if m.files:  # files of one directory (a hub repo), each its own source
                out += [(f"models.{name}.weights", f"{m.weights}/{f}") for f in m.files]
            elif m.weights is not None:
                out.append((f"models.{name}.weights", m.weights))
            if rsm_models.is_config_path(m.arch):
                out.append((f"models.{name}.arch", m.arch))
        return out

    def missing_manual_sources(self):
        """The error listing every missing file the user must provide, or None.

        Fetched sources are left to the fetch jobs and products to their rules. A source
        entry that cannot be read raises RsmEvalError."""
        from . import sources

        manual = []
        for key, path in self.used_paths():
            spec = self.cfg.sources.get(path)
            if spec is None and is_product(path):
                continue  # made by a rule (e.g. the demo)
            entry = spec.entry if spec is not None else {"path": path}
            manual.append((sources.Source.from_config(key, entry), Path(path)))
        try:
            sources.check_available(manual)
        except sources.MissingSourcesError as exc:
            return exc
        return None

    # -- fetching ------------------------------------------------------------------------

    def fetch_constraint(self, is_dir: bool) -> str:
        """Regex matching exactly the fetched sources of one kind (file or directory)."""
        prefix = f"{rsm_config.SOURCES_DIR}/"
        return _either(
            [
                d.removeprefix(prefix)
                for d, s in self.cfg.sources.items()
                if s.fetched and s.is_dir == is_dir
            ]
        )

    def fetch_spec(self, fetched: str) -> rsm_config.FetchSpec:
        return self.cfg.sources[f"{rsm_config.SOURCES_DIR}/{fetched}"]

    def fetch_inputs(self, fetched: str) -> tuple[list[str], list[str]]:
        """(archives the user put on disk, annotation files) a fetch job reads: a manual
        archive (path + member), and the annotations that find an image folder by content."""
        spec = self.fetch_spec(fetched)
        archives = [spec.entry["path"]] if "path" in spec.entry else []
        layout = spec.layout or {}
        return archives, [layout["annotations"]] if layout.get("annotations") else []

    # -- sharding (embed.shards): one dataset's embedding and image hashing as N jobs ------

    def _shard_counts(self) -> dict[str, int]:
        raw, names = self.cfg.embed.shards, list(self.cfg.datasets)
        if isinstance(raw, int):
            return dict.fromkeys(names, raw)
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise RsmEvalError(
                f"config: embed.shards: unknown dataset(s) {', '.join(unknown)} "
                f"(configured: {', '.join(names)})"
            )
        return {name: raw.get(name, 1) for name in names}

    def sharded_constraint(self, sharded: bool) -> str:
        """Regex matching exactly the datasets that are (or are not) sharded."""
        return _either([d for d, n in self.shards.items() if (n > 1) == sharded])

    def shard_names(self, dataset: str) -> list[str]:
        n = self.shards[dataset]
        return [f"{i}-of-{n}" for i in range(1, n + 1)]

    def feature_shards(self, model: str, dataset: str, variant: str) -> list[str]:
        where = {"model": model, "dataset": dataset, "variant": variant}
        return [paths.FEATURE_SHARD.format(**where, shard=s) for s in self.shard_names(dataset)]

    def hash_shards(self, dataset: str) -> list[str]:
        return [
            paths.HASH_SHARD.format(dataset=dataset, shard=s) for s in self.shard_names(dataset)
        ]

    # -- models --------------------------------------------------------------------------

    def model_json(self, name: str) -> str:
        return self.cfg.models[name].to_json()

    def dataset_json(self, name: str) -> str:
        return self.cfg.datasets[name].to_json()

    def model_paths(self, name: str) -> dict[str, str | list[str]]:
        """The user's (or a fetch job's) files a job that runs the model reads."""
        m = self.cfg.models[name]
        files: dict[str, str | list[str]] = {}
        if m.files:
            files["weights"] = [f"{m.weights}/{f}" for f in m.files]
        elif m.weights is not None:
            files["weights"] = m.weights
        if rsm_models.is_config_path(m.arch):
            files["arch"] = m.arch
        return files

    def model_address(self, name: str) -> str:
        """Content address of a model at DAG time, for the user's own checkpoints.

        Weights the workflow makes (downloads, fine-tuning) are products: Snakemake tracks
        them itself, and the job computes their address from their bytes."""
        m = self.cfg.models[name]
        if m.weights is not None and is_product(m.weights):
            return "product"
        return rsm_models.address(m)

    def embed_args(self, model: str, dataset: str, variant: str) -> str:
        """The command-line arguments every embed job of one model x dataset x variant shares."""
        protocol, autocast = parse_variant(variant)
        embed, ds = self.cfg.embed, self.cfg.datasets[dataset]
        return " ".join(
            [
                f"--model {shlex.quote(self.model_json(model))}",
                f"--images-root {shlex.quote(ds.images)}",
                f"--split {shlex.quote(ds.split)}",
                f"--cache-dir {shlex.quote(self.cfg.cache_dir)}",
                f"--batch-size {embed.batch_size}",
                f"--chunk-rows {embed.chunk_rows}",
                f"--text-prefix={shlex.quote(protocol.text_prefix)}",
                "" if embed.workers is None else f"--workers {embed.workers}",
                "--autocast" if autocast else "",
            ]
        )

    # -- statistics and the report -------------------------------------------------------

    @cached_property
    def bootstrap_args(self) -> str:
        s = self.cfg.statistics
        return f"--n-resamples {s.n_resamples} --seed {s.seed} --level {s.level}"

    def published_keys(self) -> str:
        """Which published rows each model and dataset is compared with (see report)."""
        cfg = self.cfg
        return json.dumps(
            {
                "models": {n: m.published for n, m in cfg.models.items() if m.published},
                "datasets": {n: d.published for n, d in cfg.datasets.items()},
            },
            sort_keys=True,
        )

    def image_roots(self) -> dict[str, str]:
        return {n: d.images for n, d in self.cfg.datasets.items()}

    # -- fine-tuning ---------------------------------------------------------------------

    def finetune_tests(self, name: str) -> list[str]:
        ft = self.cfg.finetunes[name]
        return ft["tests"] if "tests" in ft else sorted({e.dataset for e in self.cfg.evaluations})

    def finetune_paths(self, name: str) -> dict[str, str | list[str]]:
        """Base model files (base_weights, base_arch) and the caption manifests it reads."""
        ft = self.cfg.finetunes[name]
        files = {f"base_{k}": v for k, v in self.model_paths(ft["base"]).items()}
        used = {s["dataset"] for s in ft["sources"]} | set(self.finetune_tests(name))
        for d in sorted(used):
            files[f"captions_{d}"] = paths.CAPTIONS.format(dataset=d)
        return files

    def finetune_spec(self, name: str) -> FinetuneSpec:
        ft, datasets = self.cfg.finetunes[name], self.cfg.datasets
        training = [
            TrainingSet(
                name=s["dataset"] + (f":{s['split']}" if "split" in s else ""),
                captions=paths.CAPTIONS.format(dataset=s["dataset"]),
                images=datasets[s["dataset"]].images,
                split=s.get("split"),
            )
            for s in ft["sources"]
        ]
        tests = [
            TestSet(name=d, captions=paths.CAPTIONS.format(dataset=d), split=datasets[d].split)
            for d in self.finetune_tests(name)
        ]
        return FinetuneSpec(
            name=name,
            base=self.cfg.models[ft["base"]],
            training=tuple(training),
            tests=tuple(tests),
            test_overlap=ft["test_overlap"],
            params=ft.get("params", {}),
        )

    # -- leakage audit (optional config section `leakage`) --------------------------------

    @cached_property
    def leakage_tests(self) -> list[str]:
        if self.cfg.leakage is None:
            return []
        return sorted({e.dataset for e in self.cfg.evaluations})

    @cached_property
    def leakage_hashes(self) -> list[str]:
        leak = self.cfg.leakage
        if leak is None:
            return []
        used = self.leakage_tests + [t.dataset for t in leak.train]
        return sorted({paths.HASHES.format(dataset=d) for d in used})

    def leakage_paths(self) -> dict[str, str | list[str]]:
        files: dict[str, str | list[str]] = {"hashes": self.leakage_hashes}
        leak = self.cfg.leakage
        if leak is not None and leak.confirm_with:
            files.update(self.model_paths(leak.confirm_with))
        return files

    def leakage_spec(self) -> LeakageSpec:
        leak, datasets = self.cfg.leakage, self.cfg.datasets
        if leak is None:
            raise RsmEvalError("config: no leakage section")
        confirm = self.cfg.models[leak.confirm_with] if leak.confirm_with else None
        return LeakageSpec(
            tests={
                d: HashTable(paths.HASHES.format(dataset=d), datasets[d].split)
                for d in self.leakage_tests
            },
            trains={
                t.label: HashTable(paths.HASHES.format(dataset=t.dataset), t.split)
                for t in leak.train
            },
            max_hamming=leak.max_hamming,
            cosine_threshold=leak.cosine_threshold,
            confirm_with=confirm,
            image_roots=self.image_roots() if confirm else {},
        )

    # -- semantic localization (optional config section `localization`) -------------------

    def localization_paths(self, name: str) -> list[str]:
        return self._localization().datasets[name].paths

    def localization_spec(self, name: str) -> LocalizationSpec:
        loc = self._localization()
        ds = loc.datasets[name]
        return LocalizationSpec(
            name=name,
            annotations=ds.annotations,
            images=ds.images,
            published=ds.published,
            figures=loc.figures,
            params=loc.params(),
            expected=ds.expected,
        )

    def localization_threads(self) -> int | None:
        return self._localization().threads if self.cfg.localization else None

    def _localization(self) -> rsm_config.Localization:
        if self.cfg.localization is None:
            raise RsmEvalError("config: no localization section")
        return self.cfg.localization
