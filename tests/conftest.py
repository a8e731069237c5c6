"""Shared fixtures: the package on sys.path, a tiny openCLIP config, small checkpoints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))
TINY_ARCH = ROOT / "workflow" / "demo" / "tiny-clip.json"


@pytest.fixture(autouse=True)
def _isolated_memo(tmp_path_factory, monkeypatch):
    """Each test session hashes into its own memo, never the user's results/cache."""
    from rsm_eval import cas

    memo = tmp_path_factory.getbasetemp() / "hash-memo.sqlite"
    monkeypatch.setenv(cas.MEMO_ENV, str(memo))
    cas._MEMO = None
    yield
    cas._MEMO = None


@pytest.fixture(scope="session")
def tiny_arch() -> Path:
    return TINY_ARCH


def tiny_state_dict(seed: int, quick_gelu: bool = True):
    """State dict of the tiny demo architecture, randomly initialised with `seed`."""
    import open_clip
    import torch

    cfg = json.loads(TINY_ARCH.read_text())
    cfg["quick_gelu"] = quick_gelu
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    return model.state_dict()


@pytest.fixture(scope="session")
def small_benchmark(tmp_path_factory) -> Path:
    """A small generated benchmark (Karpathy JSON + CSV), shared read-only by tests."""
    from rsm_eval.demo import generate_benchmark

    out = tmp_path_factory.mktemp("bench") / "data"
    generate_benchmark(out, seed=3, n_train=20, n_val=5, n_test=30, n_csv_images=20)
    return out


def snakemake_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    """The workflow's command line on `workdir/config.yaml` (working directory `workdir`)."""
    return [
        sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
        "--cores", "2", *extra,
    ]  # fmt: skip


def run_snakemake(
    workdir: Path, *extra: str, expect_fail: bool = False, env: dict[str, str] | None = None
) -> str:
    """Run the workflow for real; assert it succeeded (or failed); return its output."""
    import subprocess

    proc = subprocess.run(
        snakemake_cmd(workdir, *extra),
        capture_output=True,
        text=True,
        env=env or snakemake_env(),
        timeout=1200,
    )
    out = proc.stdout + proc.stderr
    assert (proc.returncode != 0) if expect_fail else (proc.returncode == 0), out
    return out


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving the returned folder: (folder, base URL)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
