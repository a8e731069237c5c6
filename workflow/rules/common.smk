# Snakemake adapters only: the plan itself (targets, paths, specs) is rsm_eval.plan.
import json
import os
import shlex
import sys
from pathlib import Path

PACKAGE_ROOT = Path(workflow.basedir) / "workflow"
sys.path.insert(0, str(PACKAGE_ROOT))

from rsm_eval import cas, paths, plan
from rsm_eval import config as rsm_config
from rsm_eval.envcheck import job_python_path
from rsm_eval.errors import RsmEvalError

# Every job runs the package from this checkout, in whatever Python the job has (the
# virtualenv, a conda env of envs/, a cluster node's); not probed when Snakemake only
# inspects the workflow, nor with --use-conda.
try:
    JOB_PYTHON_PATH = (
        job_python_path()
        if workflow.check_envvars and not workflow.deployment_settings.deployment_method
        else ""
    )
    CFG = rsm_config.load(config, "config")
except RsmEvalError as exc:
    raise WorkflowError(str(exc))
shell.prefix(
    "set -euo pipefail; "
    + (f"export PATH={shlex.quote(JOB_PYTHON_PATH)}:$PATH; " if JOB_PYTHON_PATH else "")
    + f"export PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
os.environ.setdefault(cas.MEMO_ENV, str(Path(CFG.cache_dir) / "hash-memo.sqlite"))


wildcard_constraints:
    model=plan.NAME,
    dataset=plan.NAME,
    variant=plan.VARIANT,
    name=plan.NAME,


CODE = plan.code_versions()


def wrap(fn, *args):
    """fn(*args) with the package's errors as Snakemake's."""
    try:
        return fn(*args)
    except RsmEvalError as exc:
        raise WorkflowError(str(exc))


PLAN = wrap(plan.Plan, CFG)
# Not when Snakemake only inspects the workflow (--lint, --list-rules): no jobs, no data needed.
# The plan leaves out what reads a missing manual source, so that a dry run still shows
# everything else (fetch jobs included); a real run stops before its first job (onstart).
MISSING_SOURCES = wrap(PLAN.missing_manual_sources) if workflow.check_envvars else None
if MISSING_SOURCES is not None:
    CFG = rsm_config.without_sources(CFG, [m.key for m in MISSING_SOURCES.missing])
    PLAN = plan.Plan(CFG)
    print(f"{MISSING_SOURCES}\n(planned without these)", file=sys.stderr)


onstart:
    if MISSING_SOURCES is not None:
        raise WorkflowError(str(MISSING_SOURCES))


def input_path(path):
    """Input for a file or directory the workflow reads. A user's file is addressed by its
    content (plan.source_address, a parameter), so ancient() keeps a touch from rerunning
    anything; products (fetched sources, the demo) are tracked by Snakemake as usual."""
    if isinstance(path, list):
        return [p for p in map(input_path, path) if p]
    if plan.is_product(path):
        return path
    if "{" in path or "}" in path:
        return []  # braces read as wildcards; still tracked by its content address
    return ancient(path)


def model_inputs(name):
    return {k: input_path(v) for k, v in PLAN.model_paths(name).items()}


def finetune_inputs(wildcards):
    return {k: input_path(v) for k, v in PLAN.finetune_paths(wildcards.name).items()}


def leakage_inputs(wildcards):
    return {k: input_path(v) for k, v in PLAN.leakage_paths().items()}


def fetch_inputs(wildcards):
    archives, annotations = PLAN.fetch_inputs(wildcards.fetched)
    return [ancient(p) for p in archives] + input_path(annotations)


def model_address(wildcards):
    return wrap(PLAN.model_address, wildcards.model)


def embed_args(wildcards):
    return PLAN.embed_args(wildcards.model, wildcards.dataset, wildcards.variant)


def workflow_cores():
    try:
        return workflow.cores
    except WorkflowError:
        return None  # a cluster run without --cores: the profile's set-threads sizes each job


GPUS = workflow.global_resources.get("gpu")
MODEL_THREADS = plan.model_threads(
    CFG.embed.threads, workflow_cores(), getattr(GPUS, "value", GPUS)
)
