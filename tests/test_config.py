"""Config validation: schema errors name the key; defaults are filled; evaluations resolve."""

from __future__ import annotations

import pytest
from rsm_eval import config
from rsm_eval.errors import RsmEvalError

BASE = {
    "datasets": {"d": {"format": "karpathy-json", "annotations": "a.json", "images": "imgs"}},
    "models": {"m": {"arch": "ViT-B-32-quickgelu", "pretrained": "openai"}},
}


def test_defaults_filled_and_every_pair_evaluated():
    cfg = config.load({**BASE, "models": {**BASE["models"], "r": {"arch": "x.json", "random": 1}}})
    assert cfg.cache_dir == "results/cache"
    assert cfg.embed == config.Embed(
        batch_size=64, workers=None, threads=None, shards=1, device="auto", chunk_rows=2048
    )
    # Every typed section has the schema's defaults (written only in the schema).
    assert cfg.statistics == config.Statistics(n_resamples=1000, seed=0, level=0.95)
    assert cfg.classification.enabled and cfg.classification.linear_probe.shots == (1, 2, 4, 8, 16)
    assert cfg.demo.n_train == 300 and cfg.demo.out == "results/demo/data"
    assert cfg.leakage is None and cfg.localization is None
    assert cfg.datasets["d"].split == "test"
    assert cfg.models["m"].force_quick_gelu is False
    assert [(e.model, e.dataset, e.protocol) for e in cfg.evaluations] == [
        ("m", "d", "remoteclip"),
        ("r", "d", "remoteclip"),
    ]


def test_misspelled_key_is_named():
    raw = {**BASE, "models": {"m": {"arch": "ViT-B-32", "weigths": "x.pt"}}}
    with pytest.raises(RsmEvalError, match=r"models\.m.*weigths"):
        config.load(raw)


def test_wrong_type_is_named():
    raw = {**BASE, "embed": {"batch_size": "large"}}
    with pytest.raises(RsmEvalError, match=r"embed\.batch_size"):
        config.load(raw)


def test_model_needs_exactly_one_weight_source():
    raw = {**BASE, "models": {"m": {"arch": "ViT-B-32", "pretrained": "openai", "random": 0}}}
    with pytest.raises(RsmEvalError, match="exactly one of 'weights', 'pretrained' or 'random'"):
        config.load(raw)


def test_unknown_model_in_evaluations():
    raw = {**BASE, "evaluations": [{"model": "nope", "dataset": "d"}]}
    with pytest.raises(RsmEvalError, match=r"evaluations\.0\.model: unknown model 'nope'"):
        config.load(raw)


def test_evaluations_narrow_the_product():
    raw = {
        **BASE,
        "datasets": {**BASE["datasets"], "e": {**BASE["datasets"]["d"]}},
        "evaluations": [{"model": "m", "dataset": "e"}],
    }
    cfg = config.load(raw)
    assert [(e.model, e.dataset) for e in cfg.evaluations] == [("m", "e")]


def test_shipped_configs_validate():
    from conftest import ROOT

    for path in (ROOT / "config.yaml", ROOT / "workflow/demo/config.yaml"):
        cfg = config.load_file(path)
        assert cfg.models and cfg.datasets


def test_not_a_mapping():
    with pytest.raises(RsmEvalError, match="expected a mapping"):
        config.load(["datasets"])


def test_leakage_section_is_typed_with_schema_defaults():
    cfg = config.load({**BASE, "leakage": {"train": [{"dataset": "d", "split": "train"}]}})
    assert cfg.leakage == config.Leakage(
        train=(config.LeakageTrain("d", "train"),), max_hamming=6, cosine_threshold=0.9
    )
    assert cfg.leakage.train[0].label == "d:train"


def test_model_and_dataset_read_back_from_their_json():
    cfg = config.load(BASE)
    for obj in (cfg.models["m"], cfg.datasets["d"]):
        back = type(obj).from_json(obj.to_json())
        assert back.to_json() == obj.to_json()
    with pytest.raises(RsmEvalError, match=r"Model: unknown key\(s\) weigths"):
        config.Model.from_json('{"name": "m", "arch": "a", "weigths": "x"}')
    with pytest.raises(RsmEvalError, match=r"Model: missing key\(s\) arch"):
        config.Model.from_json('{"name": "m"}')
