"""Reliability: interrupted jobs resume without losing or half-writing anything, and concurrent
jobs and workflows sharing one feature cache leave it consistent.

* An embedding job killed with SIGKILL half way resumes from its committed chunks and ends
  with the features of an uninterrupted run; a partial chunk is never read.
* A report job killed while writing leaves each output whole or absent.
* Two workflows started at once on the same cache_dir (each running several embedding jobs
  with --cores 2) both finish, agree, and leave only verified chunks; a chunk corrupted
  afterwards is set aside and recomputed, not used.

Interrupted downloads resume too: see test_sources.py (test_dropped_connection_resumes_with_range,
test_part_file_is_resumed_across_calls, test_complete_part_file_is_accepted_after_416).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT, TINY_ARCH, snakemake_cmd, snakemake_env
from rsm_eval import schemas
from rsm_eval.embeddings import read_features
from rsm_eval.featstore import FeatureStore

pytestmark = pytest.mark.workflow

SNAKEMAKE_TIMEOUT = 600


def _env(threads: int = 1) -> dict[str, str]:
    env = snakemake_env()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "workflow"), env.get("PYTHONPATH", "")) if p
    )
    # One thread per job (2 cores, several jobs at once), and the same thread count in every
    # run: float reductions then give the same bits.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def _run_snakemake(workdir: Path, *extra: str) -> str:
    proc = subprocess.run(
        snakemake_cmd(workdir, *extra),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=SNAKEMAKE_TIMEOUT,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def _meta(path: Path) -> dict:
    return json.loads(pq.read_schema(path).metadata[schemas.META_KEY])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _committed_chunks(cache: Path, kind: str) -> list[Path]:
    return sorted(
        p for p in cache.glob(f"features/*/{kind}/*.parquet") if not p.name.startswith(".")
    )


def _chunk_keys(chunks: list[Path]) -> set[str]:
    keys: set[str] = set()
    for c in chunks:
        keys.update(pq.read_table(c, columns=["key"]).column("key").to_pylist())
    return keys


def _assert_every_chunk_verifies(cache: Path) -> int:
    """Every committed chunk's name is the sha256 of its bytes; no temporary file is left."""
    chunks = list(cache.glob("features/*/*/*"))
    committed = [c for c in chunks if c.name.endswith(".parquet") and not c.name.startswith(".")]
    assert committed, f"no chunk under {cache}"
    for c in committed:
        assert c.name == _sha256(c) + ".parquet", f"{c} does not match its checksum"
    leftovers = sorted(c.name for c in chunks if c not in committed)
    assert leftovers == [], f"temporary or set-aside files in the store: {leftovers}"
    return len(committed)


# --------------------------------------------------------------------------- interruption


@pytest.fixture(scope="module")
def embed_inputs(tmp_path_factory) -> tuple[Path, Path, int]:
    """A generated benchmark and its captions manifest (12 test images, 60 captions)."""
    from rsm_eval import manifests
    from rsm_eval.config import Dataset
    from rsm_eval.demo import generate_benchmark

    base = tmp_path_factory.mktemp("resume")
    data = base / "data"
    generate_benchmark(
        data,
        seed=4,
        n_train=1,
        n_val=1,
        n_test=12,
        n_csv_images=1,
        n_exact_duplicates=0,
        n_near_duplicates=0,
        n_shared_caption_sets=0,
        n_padded=0,
    )
    ds = Dataset(
        name="demo",
        format="karpathy-json",
        annotations=str(data / "dataset_demo.json"),
        images=str(data / "images"),
    )
    m = base / "manifest"
    manifests.write(ds, m / "captions.parquet", m / "images.parquet", m / "summary.json", code="t")
    return m / "captions.parquet", data / "images", 12


# The victim runs the real command line, pausing briefly after each committed chunk so that
# the test's SIGKILL lands half way on any machine, however fast.
_SLOW_COMMITS = """
import sys, time
from rsm_eval import featstore
commit = featstore.FeatureStore.commit
def slow_commit(self, keys, embeddings):
    path = commit(self, keys, embeddings)
    time.sleep(0.3)
    return path
featstore.FeatureStore.commit = slow_commit
from rsm_eval.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _embed_cmd(
    captions: Path, images: Path, cache: Path, out: Path, slow: bool = False
) -> list[str]:
    model = {"name": "tiny", "arch": str(TINY_ARCH), "random": 0}
    return [
        sys.executable,
        *(["-c", _SLOW_COMMITS] if slow else ["-m", "rsm_eval"]),
        "embed",
        "--model",
        json.dumps(model),
        "--captions",
        str(captions),
        "--images-root",
        str(images),
        "--out-images",
        str(out / "images.parquet"),
        "--out-texts",
        str(out / "texts.parquet"),
        "--cache-dir",
        str(cache),
        "--batch-size",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--chunk-rows",
        "2",
    ]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "wb")  # noqa: SIM115 (closed with the process below)
    proc = subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
    )
    proc.log_handle = fh  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    proc.wait(timeout=timeout)
    proc.log_handle.close()  # type: ignore[attr-defined]
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text
    return text


def test_sigkilled_embedding_resumes_and_matches_an_uninterrupted_run(embed_inputs, tmp_path):
    captions, images, n_images = embed_inputs
    ref_out, ref_cache = tmp_path / "ref", tmp_path / "ref-cache"
    out, cache = tmp_path / "out", tmp_path / "cache"
    # The uninterrupted reference runs alongside the victim (same settings, its own cache).
    ref = _start(_embed_cmd(captions, images, ref_cache, ref_out), tmp_path / "ref.log")
    victim = _start(_embed_cmd(captions, images, cache, out, slow=True), tmp_path / "victim.log")
    try:
        deadline = time.monotonic() + 240
        while not _committed_chunks(cache, "image"):
            assert victim.poll() is None, "the job ended before its first chunk was seen"
            assert time.monotonic() < deadline, "no chunk committed in time"
            time.sleep(0.02)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        victim.log_handle.close()  # type: ignore[attr-defined]
    assert victim.returncode == -signal.SIGKILL

    # Killed half way: some image chunks are committed, whole and verified; no output yet.
    image_chunks = _committed_chunks(cache, "image")
    text_chunks = _committed_chunks(cache, "text")
    for c in image_chunks + text_chunks:
        assert c.name == _sha256(c) + ".parquet"
    done_images = _chunk_keys(image_chunks)
    done_texts = _chunk_keys(text_chunks)
    assert 0 < len(done_images) < n_images, "the kill did not land half way through the images"
    assert not (out / "images.parquet").exists() and not (out / "texts.parquet").exists()
    # What a kill in the middle of a commit leaves: a partial chunk under a temporary name.
    partial = image_chunks[0].parent / ".chunk-killed.tmp"
    partial.write_bytes(image_chunks[0].read_bytes()[: image_chunks[0].stat().st_size // 2])

    resumed = _start(_embed_cmd(captions, images, cache, out), tmp_path / "resume.log")
    log = _finish(resumed, tmp_path / "resume.log")
    _finish(ref, tmp_path / "ref.log")
    assert "set aside" not in log  # nothing unreadable or unverified was even looked at

    img_meta, ref_img_meta = _meta(out / "images.parquet"), _meta(ref_out / "images.parquet")
    assert (ref_img_meta["images_computed"], ref_img_meta["images_reused"]) == (n_images, 0)
    assert img_meta["images_reused"] == len(done_images)
    assert img_meta["images_computed"] == n_images - len(done_images)
    txt_meta, ref_txt_meta = _meta(out / "texts.parquet"), _meta(ref_out / "texts.parquet")
    assert txt_meta["texts_reused"] == len(done_texts)
    assert txt_meta["texts_computed"] + txt_meta["texts_reused"] == ref_txt_meta["texts_computed"]
    assert img_meta["model_address"] == ref_img_meta["model_address"]
    for kind in ("images", "texts"):
        keys, feats, _ = read_features(out / f"{kind}.parquet")
        ref_keys, ref_feats, _ = read_features(ref_out / f"{kind}.parquet")
        assert keys == ref_keys
        np.testing.assert_array_equal(feats, ref_feats)


_KILL_AT_FSYNC = """
import os, signal, sys
target = sys.argv[1]
real_fsync = os.fsync
def fsync(fd):
    # The temporary file is complete on disk; die before it is renamed into place.
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith("." + target + "."):
        os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)
os.fsync = fsync
from rsm_eval.cli import main
sys.exit(main(sys.argv[2:]))
"""

REPORT_FILES = ("retrieval.csv", "report.md", "report.html", "provenance.json")


def _assert_whole(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        assert json.loads(text)["rows"]
    elif path.suffix == ".html":
        assert text.rstrip().endswith("</html>")
    elif path.suffix == ".md":
        assert text.startswith("# RSM-Eval") and "## Provenance" in text
    else:
        assert text.startswith("model,dataset,") and len(text.splitlines()) == 1 + len(EVALUATIONS)


@pytest.mark.parametrize("killed_at", ["retrieval.csv", "report.html"])
def test_sigkilled_report_leaves_no_partial_file(shared_cache, tmp_path, killed_at):
    wd = shared_cache["workdirs"][0]
    metrics = sorted(str(p) for p in (wd / "results/metrics").glob("*/*/remoteclip.json"))
    summaries = sorted(str(p) for p in (wd / "results/manifests").glob("*/summary.json"))
    out = tmp_path / "report"
    args = [
        "report",
        "--metrics",
        *metrics,
        "--summaries",
        *summaries,
        "--out-dir",
        str(out),
        "--workflow-root",
        str(ROOT),
        "--paired",
        str(wd / "results/statistics/paired.json"),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT_FSYNC, killed_at, *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    k = REPORT_FILES.index(killed_at)
    for name in REPORT_FILES[:k]:
        _assert_whole(out / name)  # written before the kill: complete
    for name in REPORT_FILES[k:]:
        assert not (out / name).exists(), f"{name} exists after a kill before its rename"
    # Only a hidden temporary file of the killed write remains (never read by anything).
    stray = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES and p.is_file())
    assert all(s.startswith(f".{killed_at}.") and s.endswith(".tmp") for s in stray), stray

    # Run again: every file is there and whole.
    proc = subprocess.run(
        [sys.executable, "-m", "rsm_eval", *args], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    for name in REPORT_FILES:
        _assert_whole(out / name)


# --------------------------------------------------------------------------- concurrency

MODELS = ("tiny-a", "tiny-b")
# Different models and datasets: three embedding jobs per workflow, two at a time.
EVALUATIONS = (("tiny-a", "demo"), ("tiny-b", "demo"), ("tiny-a", "demo-csv"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> dict:
    """Two workflows started at once, in different working directories, on one cache_dir.

    Each has three embedding jobs (two models, two datasets), two at a time (--cores 2).
    """
    from rsm_eval.demo import generate_benchmark

    base = tmp_path_factory.mktemp("concurrent")
    data = base / "data"
    generate_benchmark(
        data,
        seed=6,
        n_train=2,
        n_val=1,
        n_test=12,
        n_csv_images=6,
        n_exact_duplicates=1,
        n_near_duplicates=1,
        n_shared_caption_sets=1,
        n_padded=1,
    )
    cache = base / "shared-cache"
    cfg = {
        "cache_dir": str(cache),
        "datasets": {
            "demo": {
                "format": "karpathy-json",
                "annotations": str(data / "dataset_demo.json"),
                "images": str(data / "images"),
                "expected": {"test": {"images": 12, "captions": 60}},
            },
            "demo-csv": {
                "format": "csv",
                "annotations": str(data / "RSMITD.csv"),
                "images": str(data / "rsmitd_images"),
            },
        },
        "models": {
            "tiny-a": {"arch": str(TINY_ARCH), "random": 0},
            "tiny-b": {"arch": str(TINY_ARCH), "random": 1},
        },
        "evaluations": [{"model": m, "dataset": d} for m, d in EVALUATIONS],
        "embed": {"batch_size": 4, "workers": 0, "device": "cpu", "chunk_rows": 8},
        "statistics": {"n_resamples": 10},
    }
    workdirs = []
    for name in ("wf-a", "wf-b"):
        wd = base / name
        wd.mkdir()
        (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
        workdirs.append(wd)
    procs = [
        subprocess.Popen(
            snakemake_cmd(wd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for wd in workdirs
    ]
    outputs = [p.communicate(timeout=SNAKEMAKE_TIMEOUT)[0] for p in procs]
    return {
        "workdirs": workdirs,
        "cache": cache,
        "returncodes": [p.returncode for p in procs],
        "outputs": outputs,
    }


def test_two_workflows_on_one_cache_finish_agree_and_leave_it_consistent(shared_cache):
    wd_a, wd_b = shared_cache["workdirs"]
    for rc, out in zip(shared_cache["returncodes"], shared_cache["outputs"], strict=True):
        assert rc == 0, out
    for model, ds in EVALUATIONS:
        for kind in ("images", "texts"):
            rel = f"results/features/{model}/{ds}/remoteclip/{kind}.parquet"
            keys_a, feats_a, meta_a = read_features(wd_a / rel)
            keys_b, feats_b, meta_b = read_features(wd_b / rel)
            assert keys_a == keys_b
            assert meta_a["model_address"] == meta_b["model_address"]
            # Rows may have been computed by either workflow, in other batches.
            np.testing.assert_allclose(feats_a, feats_b, rtol=0, atol=1e-6)
            np.testing.assert_allclose(np.linalg.norm(feats_a, axis=1), 1, atol=1e-5)
        rel = f"results/metrics/{model}/{ds}/remoteclip.json"
        rec_a = json.loads((wd_a / rel).read_text())["metrics"]
        rec_b = json.loads((wd_b / rel).read_text())["metrics"]
        assert rec_a == pytest.approx(rec_b, abs=1e-9)
    # One store per model and kind, shared by both workflows.
    cache = shared_cache["cache"]
    assert len(list(cache.glob("features/*"))) == len(MODELS)
    assert _assert_every_chunk_verifies(cache) >= 2 * len(MODELS)
    for wd in (wd_a, wd_b):
        assert (wd / "results/report/report.html").is_file()
        assert not list((wd / "results").rglob("*.tmp"))


def test_corrupted_chunk_in_shared_cache_is_set_aside_and_recomputed(shared_cache):
    wd = shared_cache["workdirs"][0]
    rel = "results/features/tiny-a/demo/remoteclip/images.parquet"
    keys, before, meta = read_features(wd / rel)
    store = FeatureStore(shared_cache["cache"], meta["model_address"], "image")
    chunk, _ = store.index()[keys[0]]
    used = [k for k in keys if store.index()[k][0] == chunk]

    # Silent corruption: the file still parses, one stored value is wrong.
    raw = bytearray(chunk.read_bytes())
    row = pq.read_table(chunk).column("embedding")[0].values.to_numpy()
    at = bytes(raw).find(row[:4].astype(np.float32).tobytes())
    assert at > 0
    raw[at : at + 4] = np.float32(1e30).tobytes()
    chunk.write_bytes(bytes(raw))
    assert float(pq.read_table(chunk).column("embedding")[0].values[0].as_py()) == pytest.approx(
        1e30
    )

    _run_snakemake(wd, rel, "--forcerun", "embed")
    log = (wd / "results/logs/embed/tiny-a/demo/remoteclip.log").read_text()
    assert f"chunk {chunk} failed its checksum; set aside" in log
    assert chunk.with_name(chunk.name + ".corrupt").exists()
    # (Recomputing the same rows in the same batches may give the very same bytes, hence the
    # same chunk name again: what matters is that every chunk now verifies.)
    keys_after, after, meta_after = read_features(wd / rel)
    assert keys_after == keys
    assert meta_after["images_computed"] == len(used)
    assert meta_after["images_reused"] == len(keys) - len(used)
    assert np.abs(after).max() <= 1.0
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    # The store is consistent again apart from the file kept for inspection.
    chunk.with_name(chunk.name + ".corrupt").unlink()
    _assert_every_chunk_verifies(shared_cache["cache"])


def test_committed_chunks_and_outputs_honour_the_umask(tmp_path):
    import stat

    from rsm_eval import cas

    old = os.umask(0o022)
    try:
        chunk = FeatureStore(tmp_path, "addr", "image").commit(["k"], np.ones((1, 4)))
        cas.write_text_atomic(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(chunk.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == 0o644
