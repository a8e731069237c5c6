import json
import os
import shlex
import sys
from pathlib import Path

PACKAGE_ROOT = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_ROOT))
# Every job runs the package from this checkout, in whatever Python the job has (the
# virtualenv, a conda env of envs/, a cluster node's).
shell.prefix(
    "set -euo pipefail; "
    f"export PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

from rsm_eval import cas
from rsm_eval import config as rsm_config
from rsm_eval import models as rsm_models
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
    protocol="remoteclip",


# Products live under results/; anything else a rule reads is a source given by the user.
RESULTS = Path("results").resolve()

# Version of the code behind each stage: a rule reruns when its stage's code changes.
CODE = {
    "manifest": cas.code_version("rsm_eval.manifests", "rsm_eval.schemas"),
    "embed": cas.code_version(
        "rsm_eval.embeddings", "rsm_eval.models", "rsm_eval.featstore"
    ),
    "evaluate": cas.code_version("rsm_eval.evaluate", "rsm_eval.metrics"),
    "report": cas.code_version("rsm_eval.report"),
}


def is_product(path):
    return Path(path).resolve().is_relative_to(RESULTS)


def source(path, what):
    """Input for a source file or directory.

    A source is addressed by its content (memoised by stat), not its mtime: ancient() keeps a
    touch from rerunning anything, and the content address, passed as a parameter, reruns
    exactly what depends on changed bytes.
    """
    if is_product(path):
        return path
    if not os.path.exists(path):
        raise WorkflowError(
            f"{what}: {path} does not exist. Put the file there (see README, 'Data and "
            "checkpoints') or change the path in your config."
        )
    return ancient(path)


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
    try:
        return rsm_models.address(CFG.models[name])
    except RsmEvalError as exc:
        raise WorkflowError(str(exc))


def model_inputs(name):
    m = CFG.models[name]
    files = {}
    if m.weights is not None:
        files["weights"] = source(m.weights, f"models.{name}.weights")
    if rsm_models.is_config_path(m.arch):
        files["arch"] = source(m.arch, f"models.{name}.arch")
    return files


METRICS_FILES = [
    f"results/metrics/{e.model}/{e.dataset}/{e.protocol}.json" for e in CFG.evaluations
]
SUMMARY_FILES = sorted(
    {f"results/manifests/{e.dataset}/summary.json" for e in CFG.evaluations}
)
REPORT_FILES = [
    "results/report/retrieval.csv",
    "results/report/report.md",
    "results/report/report.html",
    "results/report/provenance.json",
]
