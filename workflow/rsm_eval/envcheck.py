"""Which Python runs the jobs: a probe the workflow runs once, before planning any job."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import RsmEvalError

# What a job imports first; a Python without them cannot run any stage.
NEEDED = ("pyarrow", "yaml", "open_clip")


def job_python_path() -> str:
    """PATH entry that makes `python` in a job this interpreter, or "" for the one on PATH.

    Jobs run `python -m rsm_eval`, the first `python` on PATH. This interpreter (Snakemake's
    own) is chosen when it has the workflow's packages, so `.venv/bin/snakemake` works
    without activating the virtualenv; else the `python` on PATH, which must have them.
    Neither: an error saying how to run. (With --use-conda the rule's environment is used
    and the workflow does not ask.)
    """
    if all(importlib.util.find_spec(m) is not None for m in NEEDED):
        return str(Path(sys.executable).parent)
    found = shutil.which("python")
    probe = f"import {', '.join(NEEDED)}"
    if found and subprocess.run([found, "-c", probe], capture_output=True).returncode == 0:
        return ""
    raise RsmEvalError(
        f"the jobs' Python ({found or 'no python on PATH'}) and Snakemake's own "
        f"({sys.executable}) lack the workflow's packages ({', '.join(NEEDED)}): install "
        "them (pip install -r requirements.txt) into the environment Snakemake runs from, "
        "activate the virtualenv that has them (source .venv/bin/activate), or add --use-conda"
    )
