import json
import os
import re
import shlex
import sys
from pathlib import Path

PACKAGE_ROOT = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_ROOT))


def job_python_path():
    """PATH entry that makes `python` in a job Snakemake's own interpreter, or "".

    Jobs run `python -m rsm_eval`, which is the first `python` on PATH. With `--use-conda`
    that is the rule's environment; otherwise it is Snakemake's own interpreter when that has
    the workflow's packages (`.venv/bin/snakemake` works without activating the virtualenv),
    else the `python` on PATH, which must have them: if it does not, stop before any job.
    """
    import importlib.util
    import shutil
    import subprocess

    if workflow.deployment_settings.deployment_method:
        return ""
    needed = ("pyarrow", "yaml", "open_clip")
    if all(importlib.util.find_spec(m) is not None for m in needed):
        return str(Path(sys.executable).parent)
    found = shutil.which("python")
    probe = f"import {', '.join(needed)}"
    if (
        found
        and subprocess.run([found, "-c", probe], capture_output=True).returncode == 0
    ):
        return ""
    raise WorkflowError(
        f"the jobs' Python ({found or 'no python on PATH'}) and Snakemake's own "
        f"({sys.executable}) lack the workflow's packages ({', '.join(needed)}): install "
        "them (pip install -r requirements.txt) into the environment Snakemake runs from, "
        "activate the virtualenv that has them (source .venv/bin/activate), or add --use-conda"
    )


JOB_PYTHON_PATH = job_python_path() if workflow.check_envvars else ""
# Every job runs the package from this checkout, in whatever Python the job has (the
# virtualenv, a conda env of envs/, a cluster node's).
shell.prefix(
    "set -euo pipefail; "
    + (f"export PATH={shlex.quote(JOB_PYTHON_PATH)}:$PATH; " if JOB_PYTHON_PATH else "")
    + f"export PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

from rsm_eval import cas
from rsm_eval import config as rsm_config
from rsm_eval import models as rsm_models
from rsm_eval import sources as rsm_sources
from rsm_eval.protocols import parse_variant
from rsm_eval.errors import RsmEvalError

try:
    CFG = rsm_config.load(config, "config")
except RsmEvalError as exc:
    raise WorkflowError(str(exc))

os.environ.setdefault(cas.MEMO_ENV, str(Path(CFG.cache_dir) / "hash-memo.sqlite"))

NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"


wildcard_constraints:
    model=NAME,
    dataset=NAME,
    variant="(remoteclip|skyscript)(-autocast)?",
    name=NAME,


# Products live under results/; anything else a rule reads is a source given by the user.
RESULTS = Path("results").resolve()

# Version of the code behind each stage, derived from what its module imports (cas): a rule
# reruns when its stage's code, or any module of the package that code uses, changes.
CODE = {
    stage: cas.code_version(f"rsm_eval.{module}")
    for stage, module in {
        "manifest": "manifests",
        "embed": "embeddings",
        "evaluate": "evaluate",
        "statistics": "stats",
        "report": "report",
        "leakage": "leakage",
        "finetune": "finetune",
        "classify": "classify",
        "localize": "localize",
        "localize_report": "localize_report",
        "scene_manifest": "scenes",
        "scene_eval": "scene_eval",
        "probe": "probe",
        "scene_report": "scene_report",
    }.items()
}


def is_product(path):
    return Path(path).resolve().is_relative_to(RESULTS)


def source(path):
    """Input for a file or directory the workflow reads.

    A user's file is addressed by its content (memoised by stat), not its mtime: ancient()
    keeps a touch from rerunning anything, and the content address, passed as a parameter,
    reruns exactly what depends on changed bytes. Products (fetched sources, the demo) are
    tracked by Snakemake as usual.
    """
    if is_product(path):
        return path
    if "{" in path or "}" in path:
        # Snakemake would read braces as wildcards; the file is still tracked by its
        # content address (params) and checked to exist above.
        return []
    return ancient(path)


def used_paths():
    """(config key, local path) of every file the requested evaluations read."""
    out = []
    evaluated = list(CFG.evaluations) + list(CFG.scene_evaluations)
    for name in sorted({e.dataset for e in evaluated}):
        ds = CFG.datasets[name]
        if ds.annotations:  # a class-folder dataset has none
            out += [(f"datasets.{name}.annotations", ds.annotations)]
        out += [(f"datasets.{name}.images", ds.images)]
    for name, ds in sorted((CFG.localization.get("datasets") or {}).items()):
        for fld in ("root",) if "root" in ds else ("annotations", "images"):
            out += [(f"localization.datasets.{name}.{fld}", ds[fld])]
    localized = set(CFG.localization.get("models") or [])
    for name in sorted({e.model for e in evaluated} | localized):
        m = CFG.models[name]
        if m.files:  # files of one directory (a hub repo), each its own source
            out += [(f"models.{name}.weights", f"{m.weights}/{f}") for f in m.files]
        elif m.weights is not None:
            out.append((f"models.{name}.weights", m.weights))
        if rsm_models.is_config_path(m.arch):
            out.append((f"models.{name}.arch", m.arch))
    return out


def missing_manual_sources():
    """Every missing file the user must provide (one error listing them all), or None."""
    manual = []
    for key, path in used_paths():
        spec = CFG.sources.get(path)
        if spec is None and is_product(path):
            continue  # made by a rule (e.g. the demo)
        entry = spec.entry if spec is not None else {"path": path}
        try:
            manual.append((rsm_sources.Source.from_config(key, entry), Path(path)))
        except RsmEvalError as exc:
            raise WorkflowError(str(exc))
    try:
        rsm_sources.check_available(manual)  # url sources are left to the fetch jobs
    except rsm_sources.MissingSourcesError as exc:
        return exc
    return None


# Not when Snakemake only inspects the workflow (--lint, --list-rules): no jobs, no data needed.
# The plan leaves out what reads a missing manual source, so that a dry run still shows
# everything else (fetch jobs included); a real run stops before its first job (onstart).
MISSING_SOURCES = missing_manual_sources() if workflow.check_envvars else None
if MISSING_SOURCES is not None:
    CFG = rsm_config.without_sources(CFG, [m.key for m in MISSING_SOURCES.missing])
    print(f"{MISSING_SOURCES}\n(planned without these)", file=sys.stderr)


onstart:
    if MISSING_SOURCES is not None:
        raise WorkflowError(str(MISSING_SOURCES))


def source_address(path):
    if is_product(path):
        return "product"  # a rule's output: Snakemake's own triggers track it
    if os.path.isdir(path):
        return cas.memo().tree(path)
    return cas.memo().file(path)


def dataset_json(name):
    ds = CFG.datasets[name]
    return json.dumps({k: v for k, v in ds.__dict__.items()}, sort_keys=True)


def model_json(name):
    return json.dumps(
        {k: v for k, v in CFG.models[name].__dict__.items()}, sort_keys=True
    )


def model_address(name):
    """Content address of a model at DAG time, for the user's own checkpoints.

    Weights the workflow makes (downloads, fine-tuning) are products: Snakemake tracks them
    itself, and the embed job computes their address from their bytes.
    """
    m = CFG.models[name]
    if m.weights is not None and is_product(m.weights):
        return "product"
    try:
        return rsm_models.address(m)
    except RsmEvalError as exc:
        raise WorkflowError(str(exc))


def model_inputs(name):
    m = CFG.models[name]
    files = {}
    if m.files:
        files["weights"] = [source(f"{m.weights}/{f}") for f in m.files]
    elif m.weights is not None:
        files["weights"] = source(m.weights)
    if rsm_models.is_config_path(m.arch):
        files["arch"] = source(m.arch)
    return files


def finetune_inputs(name):
    ft = CFG.finetunes[name]
    files = {f"base_{k}": v for k, v in model_inputs(ft["base"]).items()}
    datasets = sorted({s["dataset"] for s in ft["sources"]} | set(finetune_tests(name)))
    for d in datasets:
        files[f"captions_{d}"] = f"results/manifests/{d}/captions.parquet"
    return files


def finetune_tests(name):
    ft = CFG.finetunes[name]
    return (
        ft["tests"] if "tests" in ft else sorted({e.dataset for e in CFG.evaluations})
    )


def finetune_spec(name):
    ft = CFG.finetunes[name]
    base = CFG.models[ft["base"]]
    return json.dumps(
        {
            "name": name,
            "base": base.__dict__,
            "sources": [
                {
                    "name": s["dataset"] + (f":{s['split']}" if "split" in s else ""),
                    "captions": f"results/manifests/{s['dataset']}/captions.parquet",
                    "images": CFG.datasets[s["dataset"]].images,
                    "split": s.get("split"),
                }
                for s in ft["sources"]
            ],
            "tests": [
                {
                    "name": d,
                    "captions": f"results/manifests/{d}/captions.parquet",
                    "split": CFG.datasets[d].split,
                }
                for d in finetune_tests(name)
            ],
            "test_overlap": ft["test_overlap"],
            "params": ft.get("params", {}),
        },
        sort_keys=True,
    )


def fetch_constraint(is_dir):
    """Regex matching exactly the fetched sources of one kind (file or directory)."""
    paths = [
        re.escape(d.removeprefix(f"{rsm_config.SOURCES_DIR}/"))
        for d, s in CFG.sources.items()
        if s.fetched and s.is_dir == is_dir
    ]
    return "|".join(paths) or "$^"


def fetch_spec(wildcards):
    spec = CFG.sources[f"{rsm_config.SOURCES_DIR}/{wildcards.source}"]
    extra = {"dir": spec.is_dir, "layout": spec.layout}
    return json.dumps({"key": spec.key, **spec.entry, **extra}, sort_keys=True)


def fetch_inputs(wildcards):
    """A manual archive (path + member) is read from where the user put it; an image folder
    found by content needs its dataset's annotation file first."""
    spec = CFG.sources[f"{rsm_config.SOURCES_DIR}/{wildcards.source}"]
    files = [ancient(spec.entry["path"])] if "path" in spec.entry else []
    if spec.layout and spec.layout.get("annotations"):
        annotations = source(spec.layout["annotations"])
        if annotations:
            files.append(annotations)
    return files


STATS = CFG.raw["statistics"]
BOOTSTRAP_ARGS = f"--n-resamples {STATS['n_resamples']} --seed {STATS['seed']} --level {STATS['level']}"


def published_keys():
    """Which published rows each model and dataset is compared with (see report)."""
    return json.dumps(
        {
            "models": {n: m.published for n, m in CFG.models.items() if m.published},
            "datasets": {n: d.published for n, d in CFG.datasets.items()},
        },
        sort_keys=True,
    )


# Leakage audit (optional config section `leakage`).
LEAKAGE = CFG.raw.get("leakage") or {}
LEAKAGE_TRAINS = {
    f"{t['dataset']}:{t.get('split') or 'all'}": (t["dataset"], t.get("split"))
    for t in LEAKAGE.get("train", [])
}
LEAKAGE_TESTS = sorted({e.dataset for e in CFG.evaluations}) if LEAKAGE else []
LEAKAGE_HASHES = sorted(
    {
        f"results/leakage/hashes/{d}.parquet"
        for d in LEAKAGE_TESTS + [d for d, _ in LEAKAGE_TRAINS.values()]
    }
)


def image_roots():
    return json.dumps({n: d.images for n, d in CFG.datasets.items()}, sort_keys=True)


def leakage_inputs(wildcards):
    files = {"hashes": LEAKAGE_HASHES}
    if LEAKAGE.get("confirm_with"):
        files.update(model_inputs(LEAKAGE["confirm_with"]))
    return files


def leakage_confirm_args():
    """Near duplicates confirmed by image-embedding cosine when a model is configured."""
    name = LEAKAGE.get("confirm_with")
    if not name:
        return ""
    return " ".join(
        [
            "--confirm-model",
            shlex.quote(model_json(name)),
            "--threshold",
            str(LEAKAGE.get("cosine_threshold", 0.9)),
            "--image-roots",
            shlex.quote(image_roots()),
            "--cache-dir",
            shlex.quote(CFG.cache_dir),
            "--device",
            CFG.embed["device"],
        ]
    )


def leakage_spec():
    hashes = "results/leakage/hashes/{}.parquet"
    return json.dumps(
        {
            "tests": {
                d: [hashes.format(d), CFG.datasets[d].split] for d in LEAKAGE_TESTS
            },
            "trains": {
                label: [hashes.format(d), split]
                for label, (d, split) in LEAKAGE_TRAINS.items()
            },
        },
        sort_keys=True,
    )


METRICS_FILES = [
    f"results/metrics/{e.model}/{e.dataset}/{e.variant}.json" for e in CFG.evaluations
]
SUMMARY_FILES = sorted(
    {f"results/manifests/{e.dataset}/summary.json" for e in CFG.evaluations}
)
CLEAN_METRICS_FILES = (
    [
        f"results/metrics/{e.model}/{e.dataset}/{e.variant}.clean.json"
        for e in CFG.evaluations
        if e.protocol == "remoteclip" and not e.autocast
    ]
    if LEAKAGE
    else []
)
CLASSIFICATION_FILES = (
    sorted({f"results/classification/{m}/{d}.json" for m, d in CFG.model_datasets()})
    if CFG.raw["classification"]["enabled"]
    else []
)
# Scene classification (class-folder and label-CSV datasets): manifests, zero-shot per model
# and template set, linear probes per model (all from cached image features).
PROBE = CFG.raw["classification"]["linear_probe"]
SCENE_FILES = (
    sorted({f"results/scenes/{e.dataset}/summary.json" for e in CFG.scene_evaluations})
    + [
        f"results/scenes/{e.dataset}/zeroshot/{e.model}/{e.templates}.json"
        for e in CFG.scene_evaluations
    ]
    + (
        [f"results/scenes/{d}/probe/{m}.json" for m, d in CFG.scene_pairs()]
        if PROBE["enabled"]
        else []
    )
)
FINETUNE_RECORDS = [f"results/finetune/{n}/model.json" for n in CFG.finetunes]
REPORT_FILES = [
    "results/report/retrieval.csv",
    "results/report/report.md",
    "results/report/report.html",
    "results/report/provenance.json",
]


# Semantic localization (optional config section `localization`).
LOC = CFG.localization
LOC_RAW = CFG.raw.get("localization") or {}
LOCALIZATION_FILES = [
    f"results/localization/{m}/{d}/metrics.json"
    for d in LOC.get("datasets", {})
    for m in LOC.get("models", [])
]
LOC_PARAMS = (
    "windows",
    "crop_size",
    "crop_jpeg_quality",
    "median_blur",
    "probmap_jpeg_quality",
)


def localization_dataset_json(name):
    ds = LOC["datasets"][name]
    return json.dumps(
        {
            "name": name,
            "annotations": ds["annotations"],
            "images": ds["images"],
            "expected": ds.get("expected", {}),
            "published": ds["published"],
            "figures": LOC_RAW["figures"],
            "params": {k: LOC_RAW[k] for k in LOC_PARAMS},
        },
        sort_keys=True,
    )


def localization_paths(name):
    ds = LOC["datasets"][name]
    return [ds["root"]] if "root" in ds else [ds["annotations"], ds["images"]]


def localization_inputs(name):
    return [source(p) for p in localization_paths(name)]


# CPUs of a job that runs a model (embed, classify, leakage confirmation, fine-tuning):
# embed.threads, else all of --cores (split between the GPUs of --resources gpu=N). Snakemake
# caps it to --cores and exports it as OMP_NUM_THREADS; under SLURM the profile's set-threads
# and cpus_per_gpu size the allocation, and the stage uses what SLURM gives (gpus.plan_cpu).
def model_threads():
    if CFG.embed["threads"]:
        return CFG.embed["threads"]
    try:
        cores = workflow.cores
    except WorkflowError:
        # A cluster run without --cores: the profile's set-threads sizes each job.
        cores = 1
    gpu = workflow.global_resources.get("gpu")
    n_gpus = getattr(gpu, "value", gpu) or 1
    return max(1, (cores or 1) // n_gpus)


MODEL_THREADS = model_threads()


# Sharding (embed.shards): one dataset's embedding, and its image hashing, as N jobs.
def _shard_counts():
    raw = CFG.embed["shards"]
    if isinstance(raw, int):
        return {name: raw for name in CFG.datasets}
    unknown = sorted(set(raw) - set(CFG.datasets))
    if unknown:
        raise WorkflowError(
            f"config: embed.shards: unknown dataset(s) {', '.join(unknown)} "
            f"(configured: {', '.join(CFG.datasets)})"
        )
    return {name: raw.get(name, 1) for name in CFG.datasets}


SHARDS = _shard_counts()


def sharded_constraint(sharded):
    """Regex matching exactly the datasets that are (or are not) sharded."""
    names = [re.escape(d) for d, n in SHARDS.items() if (n > 1) == sharded]
    return "|".join(names) or "$^"


def shard_names(dataset):
    return [f"{i}-of-{SHARDS[dataset]}" for i in range(1, SHARDS[dataset] + 1)]


def embed_args(wildcards):
    """The command-line arguments every embed job of one model x dataset x variant shares."""
    protocol, autocast = parse_variant(wildcards.variant)
    workers = CFG.embed["workers"]
    return " ".join(
        [
            f"--model {shlex.quote(model_json(wildcards.model))}",
            f"--images-root {shlex.quote(CFG.datasets[wildcards.dataset].images)}",
            f"--split {shlex.quote(CFG.datasets[wildcards.dataset].split)}",
            f"--cache-dir {shlex.quote(CFG.cache_dir)}",
            f"--batch-size {CFG.embed['batch_size']}",
            f"--chunk-rows {CFG.embed['chunk_rows']}",
            f"--text-prefix={shlex.quote(protocol.text_prefix)}",
            "" if workers is None else f"--workers {workers}",
            "--autocast" if autocast else "",
        ]
    )
