"""rsm_eval.plan: targets, path templates, specs and missing sources, without Snakemake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rsm_eval import cli, config, paths, plan, specs
from rsm_eval.errors import RsmEvalError

DEMO = Path(__file__).resolve().parents[1] / "workflow" / "demo" / "config.yaml"


@pytest.fixture(scope="module")
def demo_plan() -> plan.Plan:
    return plan.Plan(config.load(yaml.safe_load(DEMO.read_text())))


def test_targets_of_the_demo(demo_plan):
    p = demo_plan
    assert p.metrics_files == [
        "results/metrics/tiny-seed0/demo/remoteclip.json",
        "results/metrics/tiny-seed1/demo/remoteclip.json",
        "results/metrics/tiny-finetuned/demo/remoteclip.json",
        "results/metrics/tiny-seed0/demo/skyscript.json",
    ]
    assert p.ranks_files == [f.replace(".json", ".ranks.parquet") for f in p.metrics_files]
    # cleaned metrics: the published protocol only
    assert p.clean_metrics_files == [
        f.replace(".json", ".clean.json") for f in p.metrics_files if "remoteclip" in f
    ]
    assert p.leakage_hashes == [
        "results/leakage/hashes/demo-rsmitd.parquet",
        "results/leakage/hashes/demo.parquet",
    ]
    assert p.finetune_records == ["results/finetune/tiny-finetuned/model.json"]
    assert len(p.localization_files) == 2 and p.audit_files == [paths.AUDIT]
    assert "results/scenes/demo-scenes/probe/tiny-seed0.json" in p.scene_files


def test_every_spec_reads_back_with_its_own_class(demo_plan):
    p = demo_plan
    for spec in (
        p.finetune_spec("tiny-finetuned"),
        p.leakage_spec(),
        p.localization_spec("demo-slt"),
        p.cfg.classification.linear_probe,
    ):
        assert type(spec).from_json(spec.to_json()) == spec
    leak = p.leakage_spec()
    assert leak.confirm_with == p.cfg.models["tiny-finetuned"] and leak.max_hamming == 6
    demo_hashes = paths.HASHES.format(dataset="demo")
    assert leak.trains["demo:train"] == specs.HashTable(demo_hashes, "train")
    # what the CLI receives is what the plan built
    args = cli.build_parser().parse_args(["leakage", "--spec", leak.to_json(), "--out", "a"])
    assert args.spec == leak
    ft = p.finetune_spec("tiny-finetuned")
    assert [t.name for t in ft.training] == ["demo-rsmitd", "demo:train"]
    assert ft.test_overlap == "exclude" and ft.base.name == "tiny-seed0"


def test_a_spec_with_a_wrong_key_is_refused():
    with pytest.raises(RsmEvalError, match=r"FinetuneSpec: unknown key\(s\) sources"):
        specs.FinetuneSpec.from_json(json.dumps({"sources": []}))
    with pytest.raises(RsmEvalError, match=r"LeakageSpec.tests.d: missing key\(s\) hashes"):
        specs.LeakageSpec.from_dict(
            {"tests": {"d": {}}, "trains": {}, "max_hamming": 6, "cosine_threshold": 0.9}
        )


def test_shards_and_their_constraints():
    raw = yaml.safe_load(DEMO.read_text())
    raw["embed"]["shards"] = {"demo": 3}
    p = plan.Plan(config.load(raw))
    assert p.shard_names("demo") == ["1-of-3", "2-of-3", "3-of-3"]
    assert p.sharded_constraint(True) == "demo"
    assert p.hash_shards("demo")[0] == "results/leakage/hashes/demo/1-of-3.parquet"
    raw["embed"]["shards"] = {"nope": 2}
    with pytest.raises(RsmEvalError, match="embed.shards: unknown dataset"):
        plan.Plan(config.load(raw))


def test_missing_manual_source_is_one_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = {
        "datasets": {"d": {"format": "karpathy-json", "annotations": "a.json", "images": "imgs"}},
        "models": {"m": {"arch": "ViT-B-32", "weights": "w.pt"}},
    }
    p = plan.Plan(config.load(raw))
    missing = p.missing_manual_sources()
    assert missing is not None
    assert {m.key for m in missing.missing} == {
        "datasets.d.annotations",
        "datasets.d.images",
        "models.m.weights",
    }
    for name in ("a.json", "w.pt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "imgs").mkdir()
    assert p.missing_manual_sources() is None


def test_stage_code_versions_are_derived_for_every_stage():
    versions = plan.code_versions()
    assert set(versions) == set(plan.STAGE_MODULES)
    assert all(len(v) == 16 for v in versions.values())


def test_model_threads_split_cores_between_gpus():
    assert plan.model_threads(None, 8, None) == 8
    assert plan.model_threads(None, 8, 4) == 2
    assert plan.model_threads(None, 2, 4) == 1  # never zero
    assert plan.model_threads(None, None, None) == 1  # cluster without --cores
    assert plan.model_threads(3, 8, 4) == 3  # embed.threads wins
