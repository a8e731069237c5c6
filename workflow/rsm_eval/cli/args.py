"""Argument types and option groups shared by the subcommands."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import Dataset, Model
from ..errors import RsmEvalError

DEVICES = ("auto", "cpu", "cuda")


def json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def spec_arg(cls):
    """argparse type reading a spec with its own class's from_json (rsm_eval.jsonspec)."""

    def parse(text: str):
        try:
            return cls.from_json(text)
        except RsmEvalError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = cls.__name__
    return parse


def add_stage(sub, name: str, func, help: str, *required: str, code: bool = False):
    """A subcommand with its required path options (`--out`, ...) and optional --code."""
    p = sub.add_parser(name, help=help)
    for opt in required:
        p.add_argument(f"--{opt}", required=True)
    if code:
        p.add_argument("--code", default="")
    p.set_defaults(func=func)
    return p


def add_bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95)


def bootstrap_kwargs(args: argparse.Namespace) -> dict:
    """The options of add_bootstrap_args, as the stages' keyword arguments."""
    return {"n_resamples": args.n_resamples, "seed": args.seed, "level": args.level}


def add_device_args(p: argparse.ArgumentParser, threads: bool = True) -> None:
    p.add_argument("--device", choices=DEVICES, default="auto")
    if threads:
        p.add_argument("--threads", type=int, default=None, help="CPUs of the job (default: all)")


def add_model_job_args(
    p: argparse.ArgumentParser, batch: bool = True, threads: bool = True
) -> None:
    """What every job that runs a model takes: the model, the feature store, the device."""
    p.add_argument("--model", type=spec_arg(Model), required=True, help="model entry as JSON")
    p.add_argument("--cache-dir", required=True)
    add_device_args(p, threads=threads)
    if batch:
        p.add_argument("--batch-size", type=int, default=64)


def add_dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=spec_arg(Dataset), required=True, help="dataset entry as JSON")


def cpu_plan(device: str, threads: int | None, workers: int | None = 0):
    """Set torch's threads for a model job (gpus.plan_cpu) and log them."""
    from .. import gpus

    plan = gpus.plan_cpu(device, threads, workers)
    gpus.apply_cpu_plan(plan)
    print(plan.describe(), file=sys.stderr, flush=True)
    return plan
