"""`rsm-eval`: the plain command-line entry point; each workflow rule calls one subcommand.

Rules pass datasets and models as JSON (shell-quoted by Snakemake), so the same commands
work outside Snakemake and nothing from config or data reaches a shell unquoted.

Each module of this subpackage holds one task's subcommands: its handlers, which import
their stage lazily, and `register`, which adds their parsers. A stage's code version counts
this front end's module-level imports only (cas.import_closure), not the stages it reaches.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import RsmEvalError
from . import data, leakage, localization, retrieval, scenes, training

GROUPS = (data, retrieval, leakage, scenes, training, localization)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsm-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RsmEvalError as exc:
        print(f"rsm-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
