"""Hub models without a registry entry, through the whole workflow against a real HTTP server
on 127.0.0.1 standing in for huggingface.co (HF_ENDPOINT): an open_clip `hf-hub:` name and a
transformers SigLIP repo; every file fetched, locked on first use, and verified. And the
registry: a config listing every registry model plans cleanly."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
import yaml
from conftest import TINY_ARCH, run_snakemake, snakemake_env, tiny_state_dict
from rsm_eval import config as rsm_config

pytestmark = pytest.mark.workflow


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_hub_models_fetch_lock_and_evaluate(http_root, small_benchmark, tmp_path):
    pytest.importorskip("transformers")
    from test_models_hf import save_tiny_siglip

    www, url = http_root
    oc = www / "org/tiny-openclip/resolve/main"
    oc.mkdir(parents=True)
    (oc / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": json.loads(TINY_ARCH.read_text()), "preprocess_cfg": {}})
    )
    torch.save(tiny_state_dict(41), oc / "open_clip_pytorch_model.bin")
    (www / "org/tiny-siglip/resolve/main").mkdir(parents=True)
    sig = save_tiny_siglip(www / "org/tiny-siglip/resolve/main")
    files = sorted(p.name for p in sig.iterdir())  # what save_pretrained wrote

    wd = tmp_path / "wd"
    wd.mkdir()
    cfg = {
        "datasets": {
            "demo": {
                "format": "karpathy-json",
                "annotations": str(small_benchmark / "dataset_demo.json"),
                "images": str(small_benchmark / "images"),
            }
        },
        "models": {
            "oc": {"arch": "hf-hub:org/tiny-openclip", "activation": "quick_gelu"},
            "sig": {
                "backend": "transformers",
                "arch": "siglip",
                "hub": "org/tiny-siglip",
                "files": files,
                "text": {"max_length": 16},
            },
        },  # fmt: skip
        "classification": {"enabled": False},
        "embed": {"batch_size": 32, "workers": 0, "device": "cpu"},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**snakemake_env(), "HF_ENDPOINT": url}
    run_snakemake(wd, env=env)

    csv = (wd / "results/report/retrieval.csv").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in csv[1:]) == ["oc", "sig"]
    lock = yaml.safe_load((wd / "sources.lock.yaml").read_text())
    assert lock["models.oc.weights"]["sha256"] == _sha(oc / "open_clip_pytorch_model.bin")
    assert (
        lock["models.oc.arch"]["url"]
        == f"{url}/org/tiny-openclip/resolve/main/open_clip_config.json"
    )
    for f in files:  # one lock entry per file of the repo
        assert lock[f"models.sig.weights/{f}"]["sha256"] == _sha(sig / f)
    meta = json.loads((wd / "results/metrics/sig/demo/remoteclip.json").read_text())
    assert meta["metrics"]["mean_recall"] >= 0
    assert "Nothing to be done" in run_snakemake(wd, env=env)

    # The mirror now serves other weights: the lock refuses them.
    torch.save(tiny_state_dict(42), oc / "open_clip_pytorch_model.bin")
    run_snakemake(wd, "--forcerun", "fetch_file", expect_fail=True, env=env)
    log = (wd / "results/logs/fetch/models/oc/weights/open_clip_pytorch_model.bin.log").read_text()
    assert lock["models.oc.weights"]["sha256"] in log
    assert _sha(oc / "open_clip_pytorch_model.bin") in log


def test_every_registry_model_plans(small_benchmark, tmp_path):
    """`snakemake -n` on a config that lists every registry model."""
    registry = rsm_config.registry()
    cfg = {
        "datasets": {
            "demo": {
                "format": "karpathy-json",
                "annotations": str(small_benchmark / "dataset_demo.json"),
                "images": str(small_benchmark / "images"),
            }
        },
        "models": {name: {"registry": name} for name in registry},
    }
    loaded = rsm_config.load(cfg)
    for name, m in loaded.models.items():
        assert m.activation, f"{name}: registry entry without an activation"
    sky = loaded.models["skyclip-vit-b-32-top50pct"]
    spec = loaded.sources[sky.weights]
    assert spec.entry["member"] == "SkyCLIP_ViT_B32_top50pct/epoch_20.pt"
    git = loaded.models["git-rsclip-base"]
    assert git.backend == "transformers" and len(git.files) == 6
    assert all(f"{git.weights}/{f}" in loaded.sources for f in git.files)

    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = run_snakemake(wd, "-n")
    counts = dict(re.findall(r"^(fetch_file|embed)\s+(\d+)$", out, flags=re.M))
    n_files = sum(len(m.files) if m.files else 1 for m in loaded.models.values() if m.weights)
    assert counts == {"fetch_file": str(n_files), "embed": str(len(registry))}, out
