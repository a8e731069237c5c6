"""Sharding and CPU plumbing: N shard jobs give the unsharded features bit for bit, image
hashes gathered from shards equal the unsharded table, shards cover a split exactly once in
whole batches, and a job's CPUs are divided between torch and the loader without
oversubscribing (2 cores never get 8 workers beside 2 torch threads)."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_ARCH, run_snakemake
from rsm_eval import embeddings, gpus, leakage, manifests, schemas, shards
from rsm_eval.config import Dataset, Model
from rsm_eval.errors import RsmEvalError


@pytest.mark.parametrize("total", [0, 1, 7, 30, 31, 64, 150])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("unit", [1, 4, 7, 128])
def test_shards_cover_every_row_once_in_whole_units(total, n, unit):
    rows = list(range(total))
    parts = [shards.take(rows, shards.parse(name), unit) for name in shards.names(n)]
    assert sum(parts, []) == rows  # in order, no overlap, no gap
    for part in parts:
        if part:
            assert part[0] % unit == 0  # starts on a unit boundary: the unsharded batches
    if total >= n * unit:  # enough units: no shard is left empty
        assert all(parts)


@pytest.mark.parametrize("bad", ["0-of-3", "4-of-3", "1of3", "", "-1-of-2"])
def test_bad_shard_names_are_refused(bad):
    with pytest.raises(RsmEvalError, match="shard"):
        shards.parse(bad)


def test_cpu_plan_never_oversubscribes():
    cpu = gpus.plan_cpu("cpu", 2, None, env={}, usable=2)
    assert (cpu.torch_threads, cpu.workers) == (2, 1)
    # config.yaml's workers: 8 on a 2-core CPU run: one worker, not eight.
    assert gpus.plan_cpu("cpu", 2, 8, env={}, usable=2).workers == 1
    assert gpus.plan_cpu("cpu", 1, 8, env={}, usable=2).workers == 0
    # More threads than usable CPUs are capped.
    assert gpus.plan_cpu("cpu", 16, None, env={}, usable=2).torch_threads == 2
    # GPU: the loader gets the CPUs, torch one thread to feed the device.
    gpu = gpus.plan_cpu("cuda:0", 8, None, env={}, usable=16)
    assert (gpu.torch_threads, gpu.workers) == (1, 7)
    assert gpus.plan_cpu("cuda:0", 8, 3, env={}, usable=16).workers == 3
    assert gpus.plan_cpu("cuda:0", 2, 8, env={}, usable=16).workers == 1


def test_cpu_plan_uses_what_slurm_allocates():
    env = {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_GPU": "8", "SLURM_GPUS_ON_NODE": "1"}
    assert gpus.slurm_cpus(env) == 8
    plan = gpus.plan_cpu("cuda:0", 64, None, env=env, usable=64)  # node-wide --cores all
    assert (plan.budget, plan.workers) == (8, 7)
    assert "SLURM" in plan.source
    assert gpus.slurm_cpus({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4"}) == 4
    assert gpus.slurm_cpus({"SLURM_JOB_ID": "7", "SLURM_JOB_CPUS_PER_NODE": "6(x2)"}) == 6
    # A job step whose launcher cleared the job's variables still has SLURM_CPUS_ON_NODE.
    assert gpus.slurm_cpus({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "8"}) == 8
    assert gpus.slurm_cpus({}) is None


@pytest.fixture(scope="module")
def manifest(small_benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("m")
    ds = Dataset(
        name="demo",
        format="karpathy-json",
        annotations=str(small_benchmark / "dataset_demo.json"),
        images=str(small_benchmark / "images"),
    )
    manifests.write(ds, out / "captions.parquet", out / "images.parquet", out / "s.json", "v")
    return out


def test_sharded_embedding_equals_unsharded_bit_for_bit(manifest, small_benchmark, tmp_path):
    model = Model(name="m", arch=str(TINY_ARCH), random=3)
    # batch 3: 30 images = 10 batches; 115 distinct captions = 2 windows of 96.
    kwargs = dict(batch_size=3, workers=0, device="cpu", chunk_rows=16, threads=1)
    args = (model, manifest / "captions.parquet", small_benchmark / "images", "test")
    ref = embeddings.embed_split(
        *args, tmp_path / "ri.parquet", tmp_path / "rt.parquet", cache_dir=tmp_path / "a", **kwargs
    )
    sharded = tmp_path / "b"
    records = []
    for name in shards.names(3):
        record = tmp_path / f"{name}.json"
        embeddings.embed_split(
            *args,
            tmp_path / "unused-i",
            tmp_path / "unused-t",
            cache_dir=sharded,
            shard=shards.parse(name),
            shard_record=record,
            **kwargs,
        )
        records.append(json.loads(record.read_text()))
    assert not (tmp_path / "unused-i").exists()  # a shard writes its record, not the tables
    # Every row was computed by exactly one shard; the images by all three.
    assert sum(r["images_computed"] for r in records) == ref.images_computed == 30
    assert sum(r["texts_computed"] for r in records) == ref.texts_computed
    assert all(r["images_computed"] > 0 for r in records)
    assert sum(1 for r in records if r["texts_computed"]) == 2
    gathered = embeddings.embed_split(
        *args, tmp_path / "gi.parquet", tmp_path / "gt.parquet", cache_dir=sharded, **kwargs
    )
    assert (gathered.images_computed, gathered.texts_computed) == (0, 0)
    for kind in "it":
        k_ref, f_ref, _ = embeddings.read_features(tmp_path / f"r{kind}.parquet")
        k_got, f_got, _ = embeddings.read_features(tmp_path / f"g{kind}.parquet")
        assert k_got == k_ref
        assert f_got.tobytes() == f_ref.tobytes()


def test_sharded_image_hashes_equal_unsharded(manifest, small_benchmark, tmp_path):
    images = manifest / "images.parquet"
    root = small_benchmark / "images"
    n = leakage.hash_dataset(images, root, tmp_path / "all.parquet", threads=2)
    parts = [tmp_path / f"{name}.parquet" for name in shards.names(4)]
    counts = [
        leakage.hash_dataset(images, root, p, threads=1, shard=shards.parse(p.stem)) for p in parts
    ]
    assert sum(counts) == n and min(counts) > 0
    assert leakage.gather_hashes(parts, tmp_path / "gathered.parquet") == n
    ref, ref_meta = schemas.read_table(tmp_path / "all.parquet")
    got, got_meta = schemas.read_table(tmp_path / "gathered.parquet")
    assert got.equals(ref) and got_meta == ref_meta


def test_dag_shows_one_job_per_shard_and_model_rules_use_cores(small_benchmark, tmp_path):
    """Dry run: 3 shards -> 3 embed_shard jobs per model and 3 image_hashes_shard jobs; the
    model jobs take all of --cores (2), not Snakemake's default of 1 thread."""
    import yaml

    cfg = {
        "datasets": {
            "demo": {
                "format": "karpathy-json",
                "annotations": str(small_benchmark / "dataset_demo.json"),
                "images": str(small_benchmark / "images"),
            }
        },
        "models": {"a": {"arch": str(TINY_ARCH), "random": 1}},
        "leakage": {"train": [{"dataset": "demo", "split": "train"}]},
        "classification": {"enabled": False},
        "embed": {"shards": {"demo": 3}, "batch_size": 4},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = run_snakemake(tmp_path, "-n", "-p", "--forceall")
    stats = dict(
        line.split()[:2] for line in out.split("Job stats:")[1].splitlines()[3:] if line.strip()
    )
    assert stats["embed_shard"] == "3" and stats["embed_gather"] == "1", out
    assert stats["image_hashes_shard"] == "3" and stats["image_hashes_gather"] == "1", out
    assert "embed" not in stats and "image_hashes" not in stats, out
    for i in (1, 2, 3):
        assert f"--shard {i}-of-3" in out
    assert "--threads 2" in out
