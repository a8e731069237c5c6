"""Software environments and cluster resources of the workflow's rules, checked statically.

* envs/*.yaml: parse, conda-forge + nodefaults only, every package pinned exactly
  (python=X.Y, pip packages ==), the same pins as requirements.txt, and up to date with
  workflow/scripts/sync_envs.py.
* Every rule that runs something names a conda env that exists in envs/ (read from the
  workflow as Snakemake loads it), and has its resources in profiles/slurm.
* `snakemake --cores 8 -n` on the real config.yaml prints the whole plan, downloads
  included, on a machine with no data. A dry run never calls conda.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, snakemake_env

ENVS = sorted((ROOT / "envs").glob("*.yaml"))
SYNC = ROOT / "workflow" / "scripts" / "sync_envs.py"
SLURM_PROFILE = ROOT / "profiles" / "slurm" / "config.yaml"
PIP_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")
CONDA_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=([0-9][A-Za-z0-9.+!_-]*)$")

# Loads the workflow through Snakemake's API (as `snakemake` itself does) in a fresh process,
# and prints each rule's software and resource facts as JSON.
LOAD_RULES = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings, OutputSettings, ResourceSettings, StorageSettings,
)

root, configfile = Path(sys.argv[1]), Path(sys.argv[2])
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        snakefile=root / "Snakefile",
        workdir=Path.cwd(),
        config_settings=ConfigSettings(configfiles=[configfile]),
        resource_settings=ResourceSettings(),
        storage_settings=StorageSettings(),
    )._workflow
    rules = {
        rule.name: {
            "runs": not rule.norun,
            "conda": str(Path(str(rule.basedir)) / rule.conda_env) if rule.conda_env else None,
            "container": rule.container_img,
            "local": rule.name in workflow._localrules,
            "resources": sorted(rule.resources),
        }
        for rule in workflow.rules
    }
print("RULES=" + json.dumps(rules))
"""


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = PIP_PIN.match(line)
            assert match, f"{path.name}: {line!r} is not pinned with =="
            out[match.group(1).lower()] = match.group(2)
    return out


def env_deps(path: Path) -> tuple[list[str], list[str]]:
    """(conda dependencies, pip dependencies) of an env file."""
    conda, pip = [], []
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"} and not pip, f"{path.name}: {dep}"
            pip = list(dep["pip"])
        else:
            conda.append(str(dep))
    return conda, pip


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> dict[str, dict]:
    """Every rule of the workflow, loaded with the demo config (the real one needs data)."""
    workdir = tmp_path_factory.mktemp("rules")
    cfg = yaml.safe_load((ROOT / "workflow/demo/config.yaml").read_text())
    for model in cfg["models"].values():
        if "arch" in model and model["arch"].endswith(".json"):
            model["arch"] = str(ROOT / model["arch"])
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_RULES, str(ROOT), str(workdir / "config.yaml")],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=snakemake_env(),
        timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RULES=")]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    return json.loads(lines[-1].removeprefix("RULES="))


@pytest.mark.parametrize("path", ENVS, ids=[p.name for p in ENVS])
def test_env_file_is_pinned_and_uses_conda_forge_only(path):
    env = yaml.safe_load(path.read_text())
    assert env["name"] == f"rsm-eval-{path.stem}"
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda, pip = env_deps(path)
    python = [d for d in conda if d.split("=")[0] == "python"]
    assert len(python) == 1 and re.fullmatch(r"python=3\.\d+", python[0]), python
    for dep in conda:
        # `pip` is the installer of the pinned pip section; everything else is name=version.
        assert dep == "pip" or CONDA_PIN.match(dep), f"{path.name}: conda {dep!r} is not pinned"
    assert "pip" in conda and pip, f"{path.name}: no pip section"
    names = []
    for dep in pip:
        match = PIP_PIN.match(dep)
        assert match, f"{path.name}: pip {dep!r} is not pinned with =="
        names.append(match.group(1).lower())
    assert len(names) == len(set(names)), f"{path.name}: a package is listed twice"


def test_env_pins_agree_with_requirements():
    required = pins(ROOT / "requirements.txt")
    assert ENVS, "no envs/*.yaml"
    for path in ENVS:
        for dep in env_deps(path)[1]:
            name, version = PIP_PIN.match(dep).groups()
            assert required.get(name.lower()) == version, (
                f"{path.name} pins {name}=={version}, requirements.txt "
                f"{required.get(name.lower(), 'does not list it')}"
            )
    floor = re.search(r">=\s*(3\.\d+)", (ROOT / "pyproject.toml").read_text()).group(1)
    for path in ENVS:
        python = next(d for d in env_deps(path)[0] if d.startswith("python="))
        version = tuple(map(int, python.removeprefix("python=").split(".")))
        assert version >= tuple(map(int, floor.split("."))), f"{path.name}: {python}"


def test_env_files_are_generated_from_requirements():
    proc = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_every_rule_names_an_existing_conda_env(rules):
    env_files = {p.resolve() for p in ENVS}
    used = set()
    running = {name: r for name, r in rules.items() if r["runs"]}
    assert {"manifest", "embed", "evaluate", "report"} <= set(running)
    for name, rule in running.items():
        assert rule["conda"], f"rule {name} has no conda: directive"
        path = Path(rule["conda"]).resolve()
        assert path in env_files, f"rule {name}: conda env {path} is not one of envs/*.yaml"
        used.add(path)
    assert used == env_files, f"unused env files: {sorted(map(str, env_files - used))}"
    assert Path(rules["embed"]["conda"]).name == "torch.yaml"


def test_every_rule_has_slurm_resources(rules):
    profile = yaml.safe_load(SLURM_PROFILE.read_text())
    assert profile["executor"] == "slurm"
    default = profile["default-resources"]
    per_rule = profile["set-resources"]
    for key in ("slurm_account", "slurm_partition"):  # the user's, never the workflow's
        assert key not in default and all(key not in r for r in per_rule.values()), key
    for name, res in [("default-resources", default), *per_rule.items()]:
        assert {"mem_mb", "runtime"} <= set(res), f"{name}: needs mem_mb and runtime"
        extra = str(res.get("slurm_extra", ""))
        assert not re.search(r"--(gres|gpus)\b", extra), f"{name}: GPUs go in gpu/gres"
    for name, rule in rules.items():
        if not rule["runs"] or rule["local"]:
            continue
        assert name in per_rule, f"rule {name}: add it to set-resources in {SLURM_PROFILE}"
        if "gpu" in rule["resources"]:
            res = per_rule[name]
            assert res.get("gpu") or "gpu" in str(res.get("gres", "")), f"{name}: no GPU request"
            assert "cpus_per_gpu" in res or "cpus_per_task" in res, name


def test_dry_run_on_real_config_without_data_plans_the_downloads(tmp_path):
    """config.yaml as shipped, on a machine with no data: the dry run plans every fetch job
    (three annotation files, three image folders, four checkpoints) and everything after."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
           str(tmp_path), "--cores", "8", "-n"]  # fmt: skip
    if _conda_works():
        cmd.append("--use-conda")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
    out = proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" not in out, out
    assert proc.returncode == 0, out
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.MULTILINE))
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    scene_urls = [
        d
        for d in cfg["datasets"].values()
        if d["format"] == "class-folders" and "url" in d["images"]
    ]
    assert counts["fetch_file"] == "7", out
    assert counts["fetch_dir"] == str(3 + len(scene_urls) + len(_fetched_localization(cfg))), out
    for rule in ("manifest", "embed", "evaluate", "report"):
        assert re.search(rf"\b{rule}\b", out), out
    assert not (tmp_path / "results").exists()  # a dry run downloads nothing


def _fetched_localization(cfg):
    sets = (cfg.get("localization") or {}).get("datasets", {})
    return [d for d in sets.values() if isinstance(d.get("root"), dict) and "url" in d["root"]]


def _conda_works() -> bool:
    """A pyenv shim may put a `conda` on PATH that cannot run: ask it."""
    if shutil.which("conda") is None:
        return False
    proc = subprocess.run(["conda", "info", "--json"], capture_output=True, timeout=60)
    return proc.returncode == 0


def test_use_conda_dry_run_on_real_config_with_the_data_in_place(small_benchmark, tmp_path):
    """config.yaml with each benchmark replaced by `path:` entries of a copy already on disk
    (stand-in data): the dry run plans the checkpoint downloads, manifests, embeddings,
    metrics and report, and no dataset download. With --use-conda, Snakemake 9.27 asks `conda
    info` even in a dry run once jobs need envs: without conda (as here) that is the one thing
    that stops it."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    scene_sets = {n: ds for n, ds in cfg["datasets"].items() if ds["format"] == "class-folders"}
    for name, ds in cfg["datasets"].items():
        if ds.get("evaluate") is False:
            continue
        if ds["format"] == "class-folders":
            if "path" in ds["images"]:  # manual: a stand-in class folder
                (tmp_path / ds["images"]["path"] / "aClass").mkdir(parents=True)
            continue
        ann, img = tmp_path / "data" / name / "dataset.json", tmp_path / "data" / name / "images"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_bytes((small_benchmark / "dataset_demo.json").read_bytes())
        img.symlink_to(small_benchmark / "images")
        ds["format"] = "karpathy-json"
        ds["annotations"] = {"path": str(ann.relative_to(tmp_path))}
        ds["images"] = {"path": str(img.relative_to(tmp_path))}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
           str(tmp_path), "--cores", "8", "-n"]  # fmt: skip
    if not _conda_works():
        proc = subprocess.run(
            cmd + ["--use-conda"], capture_output=True, text=True, env=snakemake_env(), timeout=300
        )
        assert proc.returncode != 0 and "conda info" in proc.stdout + proc.stderr
    else:
        cmd.append("--use-conda")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, re.MULTILINE))
    n_models, n_datasets = len(cfg["models"]), 3
    assert counts["fetch_file"] == "4"  # the four downloadable checkpoints
    fetched = [d for d in scene_sets.values() if "url" in d["images"]]
    # the downloadable scene datasets and localization sets
    assert counts["fetch_dir"] == str(len(fetched) + len(_fetched_localization(cfg)))
    assert counts["scene_manifest"] == str(len(scene_sets))
    assert counts["scene_features"] == counts["linear_probe"] == str(n_models * len(scene_sets))
    n_sets = sum(len(d["templates"]) for d in scene_sets.values())
    assert counts["zeroshot"] == str(n_models * n_sets)
    assert counts["manifest"] == str(n_datasets)
    assert counts["embed"] == counts["evaluate"] == str(n_models * n_datasets)
    assert counts["report"] == "1"
