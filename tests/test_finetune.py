"""Fine-tuning stage: open_clip_train fine-tunes the tiny model into a state dict that loads
into its architecture and retrieves better; the address follows contents and parameters; a
training set holding evaluated test images is refused unless excluded or allowed."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import TINY_ARCH
from PIL import Image
from rsm_eval import cas, finetune, manifests, metrics, models, schemas
from rsm_eval.config import Dataset, Model
from rsm_eval.errors import RsmEvalError
from rsm_eval.finetune import launcher

BASE = Model(name="tiny", arch=str(TINY_ARCH), random=0)
PARAMS = finetune.FinetuneParams(
    epochs=3, lr=2e-3, batch_size=16, warmup=4, val_fraction=0.1, seed=0
)


@pytest.fixture(scope="module")
def env(small_benchmark, tmp_path_factory):
    """Manifests of the small benchmark (Karpathy JSON and CSV), hashing into a private memo."""
    out = tmp_path_factory.mktemp("ft")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(cas.MEMO_ENV, str(out / "memo.sqlite"))
        mp.setattr(cas, "_MEMO", None)
        paths = {}
        for name, fmt, ann, images in (
            ("demo", "karpathy-json", "dataset_demo.json", "images"),
            ("rsmitd", "csv", "RSMITD.csv", "rsmitd_images"),
        ):
            ds = Dataset(
                name=name,
                format=fmt,
                annotations=str(small_benchmark / ann),
                images=str(small_benchmark / images),
            )
            d = out / name
            manifests.write(ds, d / "captions.parquet", d / "images.parquet", d / "s.json", "v")
            paths[name] = (str(d / "captions.parquet"), str(small_benchmark / images))
        yield {"out": out, "paths": paths, "bench": small_benchmark}


def sources(env, karpathy=True, csv=True):
    out = []
    if csv:
        out.append(finetune.TrainingManifest(*env["paths"]["rsmitd"], splits=None))
    if karpathy:
        out.append(finetune.TrainingManifest(*env["paths"]["demo"], splits=("train",)))
    return out


def eval_splits(env):
    return [finetune.EvalSplit("demo", env["paths"]["demo"][0], "test")]


@pytest.fixture(scope="module")
def trained(env):
    """One short fine-tune (21 steps of 16 pairs), shared by the tests below."""
    out = env["out"] / "run" / "tiny-ft.pt"
    record = finetune.finetune(
        sources(env),
        BASE,
        PARAMS,
        out,
        tests=eval_splits(env),
        test_overlap="exclude",
        device="cpu",
        threads=1,
        cache_dir=env["out"] / "cache",
        logs_out=env["out"] / "run" / "logs",
        stream=None,
    )
    return out, record


def mean_recall(model: Model, env) -> float:
    captions, _ = schemas.read_table(env["paths"]["demo"][0], schemas.CAPTIONS)
    keys, _, _, text_image = manifests.evaluation_order(captions, "test")
    rows = sorted(
        (r for r in captions.to_pylist() if r["split"] == "test"),
        key=lambda r: (r["image_key"], r["caption_index"]),
    )
    loaded = models.build(model)
    with torch.no_grad():
        x = torch.stack(
            [
                loaded.preprocess(Image.open(env["bench"] / "images" / k).convert("RGB"))
                for k in keys
            ]
        )
        img = torch.nn.functional.normalize(loaded.model.encode_image(x), dim=-1).numpy()
        tok = loaded.tokenizer([r["caption"] for r in rows])
        txt = torch.nn.functional.normalize(loaded.model.encode_text(tok), dim=-1).numpy()
    result = metrics.remoteclip_retrieval(img, txt, np.asarray(text_image))
    return result.metrics["mean_recall"]


# ------------------------------------------------------------------------ training


def test_checkpoint_loads_into_the_architecture_and_moved(trained, env):
    out, record = trained
    state = models.read_state_dict(out)
    assert not any(k.startswith("module.") for k in state)
    assert all(v.dtype != torch.float16 for v in state.values())
    tuned = Model(name="ft", arch=str(TINY_ARCH), weights=str(out))
    net = models.build(tuned).model
    models.load_state_dict(net, state, where="test")  # strict
    initial = models.build(BASE).model.state_dict()
    changed = [k for k in initial if not torch.equal(initial[k], state[k])]
    assert len(changed) > len(initial) // 2
    assert record["checkpoint"]["sha256"] == cas.sha256_bytes(out.read_bytes())
    on_disk = json.loads(out.with_suffix(".json").read_text())
    assert on_disk == json.loads(json.dumps(record))


def test_record_describes_the_run(trained, env):
    _, record = trained
    data, training = record["data"], record["training"]
    # 20 CSV images x 2 captions + 20 train images x 5, less the 3 planted exact copies of
    # test images (5 captions each).
    assert data["n_pairs"] == 40 + 100 - 15
    assert data["n_train_pairs"] + data["n_val_pairs"] == data["n_pairs"]
    assert data["n_val_images"] == round(0.1 * (data["n_train_images"] + data["n_val_images"]))
    assert data["dropped"] == {"test_overlap_images": 3, "test_overlap_pairs": 15}
    overlaps = data["test_overlap"]["overlaps"]
    assert data["test_overlap"]["policy"] == "exclude" and len(overlaps) == 3
    assert {o["dataset"] for o in overlaps} == {"demo"}
    assert training["device"] == "cpu" and training["precision"] == "fp32"
    assert training["trainer"] == "open_clip_train.main" and training["threads"] == 1
    losses = training["train_loss_per_epoch"]
    assert len(losses) == PARAMS.epochs and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert training["train_loss"] == losses[-1]
    assert len(training["val_metrics_per_epoch"]) == PARAMS.epochs
    assert 0 <= training["val_metrics"]["image_to_text_R@1"] <= 1
    assert record["params"] == PARAMS.to_dict()
    assert record["base_model"]["address"] == models.address(BASE)
    assert record["reused"] is False and record["wall_seconds"] > 0
    logs = env["out"] / "run" / "logs"
    assert (logs / "out.log").is_file() and (logs / "results.jsonl").is_file()


def test_fine_tuning_improves_retrieval(trained, env):
    out, _ = trained
    before = mean_recall(BASE, env)
    after = mean_recall(Model(name="ft", arch=str(TINY_ARCH), weights=str(out)), env)
    print(f"mean recall before {before:.2f} after {after:.2f}")
    assert after > before + 10, (before, after)


def test_same_address_is_reused_from_the_cache(trained, env, tmp_path):
    out, record = trained
    again = finetune.finetune(
        sources(env),
        BASE,
        PARAMS,
        tmp_path / "again.pt",
        tests=eval_splits(env),
        test_overlap="exclude",
        device="cpu",
        cache_dir=env["out"] / "cache",
        stream=None,
    )
    assert again["reused"] is True and again["address"] == record["address"]
    assert (tmp_path / "again.pt").read_bytes() == out.read_bytes()


# ------------------------------------------------------------------------- address


def test_address_is_stable_and_follows_inputs(trained, env):
    _, record = trained
    tests = eval_splits(env)

    def addr(srcs=None, base=BASE, **changes):
        params = finetune.FinetuneParams(**{**PARAMS.to_dict(), **changes})
        return finetune.finetune_address(
            srcs or sources(env), base, params, tests=tests, test_overlap="exclude"
        )

    first = addr()
    assert first == addr() == record["address"]
    # Names and paths are not content: a renamed source gives the same address.
    renamed = [
        finetune.TrainingManifest(s.captions, s.images, s.splits, name="x") for s in sources(env)
    ]
    assert addr(renamed) == first
    others = {
        addr(lr=PARAMS.lr / 2),
        addr(seed=PARAMS.seed + 1),
        addr(epochs=PARAMS.epochs + 1),
        addr(sources(env, csv=False)),
        addr(base=Model(name="tiny", arch=str(TINY_ARCH), random=1)),
    }
    assert first not in others and len(others) == 5
    # Allowing the overlap trains on 3 more images: another address.
    allowed = finetune.finetune_address(
        sources(env), BASE, PARAMS, tests=tests, test_overlap="allow"
    )
    assert allowed != first


def test_params_validation_and_presets():
    assert finetune.paper_params("ViT-B-32").lr == 2e-5
    assert finetune.paper_params("ViT-B-32-quickgelu").batch_size == 256
    assert (finetune.paper_params("ViT-L-14").lr, finetune.paper_params("ViT-L-14").batch_size) == (
        1e-6,
        32,
    )
    assert finetune.FinetuneParams(lr=1).to_dict() == finetune.FinetuneParams(lr=1.0).to_dict()
    with pytest.raises(RsmEvalError, match="no RSM-CLIP preset"):
        finetune.paper_params("RN50")
    with pytest.raises(RsmEvalError, match="finetune.lr"):
        finetune.FinetuneParams(lr=0)
    with pytest.raises(RsmEvalError, match="val_fraction"):
        finetune.FinetuneParams(val_fraction=1.0)
    with pytest.raises(RsmEvalError, match="precision"):
        finetune.FinetuneParams(precision="fp8")
    with pytest.raises(RsmEvalError, match="learning_rate"):
        finetune.FinetuneParams.from_dict({"learning_rate": 1e-3})


# ---------------------------------------------------------------------- test overlap


def test_overlap_guard_on_hash_sets():
    train = {"a" * 64: "train/x.tif", "b" * 64: "train/y.tif"}
    tests = {"rsitmd": {"a" * 64: "test_1.tif"}, "rsicd": {"c" * 64}}
    with pytest.raises(RsmEvalError, match=r"train/x\.tif = rsitmd test image test_1\.tif"):
        finetune.check_no_test_overlap(train, tests)
    found = finetune.check_no_test_overlap(train, tests, allow=True)
    assert found == [
        {
            "dataset": "rsitmd",
            "image_sha256": "a" * 64,
            "train_image": "train/x.tif",
            "test_image": "test_1.tif",
        }
    ]
    assert finetune.check_no_test_overlap(set(train), {"rsicd": {"c" * 64}}) == []


def test_overlapping_training_set_is_refused(env, tmp_path):
    # The generator plants 3 exact copies of test images in the train split.
    with pytest.raises(RsmEvalError, match=r"3 image\(s\) of evaluated test splits") as err:
        finetune.finetune(
            sources(env), BASE, PARAMS, tmp_path / "m.pt", tests=eval_splits(env), stream=None
        )
    message = str(err.value)
    assert "demo test image" in message
    groups = json.loads((env["out"] / "demo" / "s.json").read_text())["identical_content_groups"]
    assert len(groups) == 3 and all(any(name in message for name in g) for g in groups)
    assert not (tmp_path / "m.pt").exists()
    allowed = finetune.select(sources(env), eval_splits(env), "allow")
    assert len(allowed.overlaps) == 3 and allowed.dropped == {}
    excluded = finetune.select(sources(env), eval_splits(env), "exclude")
    assert len(excluded.pairs) == len(allowed.pairs) - 15


# ------------------------------------------------------------------------ bad input


def test_bad_inputs_are_errors(env, tmp_path):
    demo_caps, demo_images = env["paths"]["demo"]

    def run(srcs, params=PARAMS, **kw):
        return finetune.finetune(srcs, BASE, params, tmp_path / "m.pt", stream=None, **kw)

    with pytest.raises(RsmEvalError, match="no training sources"):
        run([])
    # Training on the evaluated test split itself, excluding test images: nothing is left.
    with pytest.raises(RsmEvalError, match="empty after excluding"):
        run(
            [finetune.TrainingManifest(demo_caps, demo_images, ("test",))],
            tests=eval_splits(env),
            test_overlap="exclude",
        )
    with pytest.raises(RsmEvalError, match="image root .* does not exist"):
        run([finetune.TrainingManifest(demo_caps, str(tmp_path / "nowhere"), ("train",))])
    with pytest.raises(RsmEvalError, match="split 'restval' has no rows"):
        run([finetune.TrainingManifest(demo_caps, demo_images, ("restval",))])
    with pytest.raises(RsmEvalError, match="captions manifest .* not found"):
        run([finetune.TrainingManifest(str(tmp_path / "none.parquet"), demo_images, ("train",))])
    with pytest.raises(RsmEvalError, match="fewer than batch_size"):
        big = finetune.FinetuneParams(batch_size=4096)
        run([finetune.TrainingManifest(demo_caps, demo_images, ("train",))], params=big)
    with pytest.raises(RsmEvalError, match="warmup"):
        long = finetune.FinetuneParams(batch_size=16, epochs=1, warmup=1000)
        run([finetune.TrainingManifest(demo_caps, demo_images, ("train",))], params=long)
    with pytest.raises(RsmEvalError, match="test_overlap"):
        run(sources(env), tests=eval_splits(env), test_overlap="ignore")
    assert not (tmp_path / "m.pt").exists()


def test_blank_captions_are_dropped_and_an_all_blank_set_is_empty(env, tmp_path):
    demo_caps, demo_images = env["paths"]["demo"]
    table, meta = schemas.read_table(demo_caps, schemas.CAPTIONS)
    rows = [r for r in table.to_pylist() if r["split"] == "train"]
    for r in rows:
        r["caption"] = " " if r["caption_index"] % 2 else "NA"
        r["caption_sha256"] = cas.sha256_text(r["caption"])
    path = tmp_path / "blank.parquet"
    schemas.write_table(pa.Table.from_pylist(rows, schemas.CAPTIONS), path, schemas.CAPTIONS, meta)
    with pytest.raises(RsmEvalError, match="training set is empty"):
        finetune.load_pairs([finetune.TrainingManifest(str(path), demo_images, ("train",))])


def test_changed_image_is_a_stale_manifest(env, tmp_path):
    import shutil

    demo_caps, demo_images = env["paths"]["demo"]
    copy = tmp_path / "images"
    shutil.copytree(demo_images, copy)
    table, _ = schemas.read_table(demo_caps, schemas.CAPTIONS)
    victim = next(r["image_path"] for r in table.to_pylist() if r["split"] == "train")
    Image.new("RGB", (8, 8)).save(copy / victim, format="PNG")
    with pytest.raises(RsmEvalError, match="changed since the manifest"):
        finetune.load_pairs([finetune.TrainingManifest(demo_caps, str(copy), ("train",))])


def test_failed_training_names_the_trainer_output(env, tmp_path, monkeypatch):
    real = launcher.open_clip_argv
    monkeypatch.setattr(launcher, "open_clip_argv", lambda **kw: real(**kw) + ["--no-such-flag"])
    with pytest.raises(RsmEvalError, match=r"(?s)open_clip_train failed.*no-such-flag"):
        finetune.finetune(
            sources(env, karpathy=False),
            BASE,
            finetune.FinetuneParams(batch_size=8, epochs=1),
            tmp_path / "m.pt",
            device="cpu",
            threads=1,
            stream=None,
        )
    assert not (tmp_path / "m.pt").exists()
    assert not any(p.name.startswith(".m.pt") for p in tmp_path.iterdir())


def test_runner_registers_the_model_config_under_the_evaluated_name():
    with pytest.raises(RsmEvalError, match="--model must be rsm-eval-"):
        finetune.run_open_clip_train(["--model", "ViT-B-32"], str(TINY_ARCH))


def test_code_version_covers_every_module_of_the_subpackage():
    closure = cas.import_closure("rsm_eval.finetune")
    for module in ("pairs", "overlap", "params", "trainer", "launcher", "checkpoint", "record"):
        assert f"rsm_eval.finetune.{module}" in closure
    assert finetune.code() == cas.code_version("rsm_eval.finetune")
