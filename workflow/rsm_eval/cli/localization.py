"""The semantic-localization subcommand (AIR-SLT): one model's maps and metrics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..specs import LocalizationSpec
from .args import add_bootstrap_args, add_model_job_args, add_stage, bootstrap_kwargs, spec_arg


def cmd_localize(args: argparse.Namespace) -> None:
    from .. import gpus, localize

    spec = args.dataset
    with gpus.claim_device(args.device) as device:
        record = localize.run(
            args.model,
            Path(spec.annotations),
            Path(spec.images),
            Path(args.out),
            Path(args.figures),
            dataset=spec.name,
            cache_dir=Path(args.cache_dir),
            device=device,
            batch_size=args.batch_size,
            params=spec.params,
            expected=spec.expected,
            n_figures=spec.figures,
            threads=args.threads,
            code=args.code,
            published=spec.published,
            **bootstrap_kwargs(args),
        )
    print(
        ", ".join(f"{m} {record['metrics'][m]['mean']:.4f}" for m in localize.METRICS),
        file=sys.stderr,
    )


def register(sub) -> None:
    p = add_stage(
        sub, "localize", cmd_localize, "semantic localization (AIR-SLT) of one model",
        "out", "figures", code=True,
    )  # fmt: skip
    add_model_job_args(p)
    p.add_argument("--dataset", type=spec_arg(LocalizationSpec), required=True)
    add_bootstrap_args(p)
