"""Bad and hostile input through the real workflow (Snakemake's command line).

Bad input is a clear error that reaches the user naming the file, row or key, and leaves
nothing half written under results/. Hostile input (archives escaping their destination,
pickles that would run code, HTML in captions, shell metacharacters in every user-given path)
is refused or handled as plain data: no injected command runs.

The readers' and loaders' errors are unit-tested in test_manifests.py, test_models.py,
test_config.py and test_sources.py; here a representative subset goes through Snakemake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import ROOT, TINY_ARCH, snakemake_cmd, snakemake_env, tiny_state_dict
from PIL import Image
from rsm_eval import manifests
from rsm_eval.config import Dataset
from rsm_eval.errors import RsmEvalError

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *extra: str) -> tuple[int, str]:
    cmd = snakemake_cmd(workdir, *extra)
    env = snakemake_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def files_under(root: Path) -> set[str]:
    """Every file (hidden ones included) under root, relative to it."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def products(workdir: Path) -> set[str]:
    """Files under results/ other than logs."""
    return {f for f in files_under(workdir / "results") if not f.startswith("logs/")}


def save_image(path: Path, seed: int, size: tuple[int, int] = (32, 32), fmt: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)


def karpathy_doc(entries: list[tuple[str, str, list[str]]]) -> dict:
    return {
        "dataset": "x",
        "images": [
            {
                "filename": name,
                "imgid": i,
                "split": split,
                "sentences": [{"raw": c, "sentid": 10 * i + j} for j, c in enumerate(caps)],
            }
            for i, (name, split, caps) in enumerate(entries)
        ],
    }


CAPTIONS = ["a harbour with boats", "boats beside a pier"]


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------- bad input


def make_bad_inputs(root: Path, marker: Path) -> tuple[dict, dict[str, list[str]]]:
    """Datasets and checkpoints that are each wrong in one way; config and expected messages."""
    datasets: dict[str, dict] = {}
    expect: dict[str, list[str]] = {}  # log file (relative to results/logs) -> messages

    def karpathy_case(name, entries, mutate=None, **extra):
        d = root / name
        for i, (fname, _, _) in enumerate(entries):
            if fname != "gone.png":
                save_image(d / "imgs" / fname, seed=i)
        ann = d / "ann.json"
        ann.write_text(json.dumps(karpathy_doc(entries)))
        if mutate:
            mutate(d)
        datasets[name] = {
            "format": "karpathy-json",
            "annotations": str(ann),
            "images": str(d / "imgs"),
            **extra,
        }
        return d

    three = [(f"{c}.png", "test", CAPTIONS) for c in "abc"]
    karpathy_case("good", three)
    d = karpathy_case(
        "json-truncated", three, lambda d: (d / "ann.json").write_text('{"images": [{"file')
    )
    expect["manifest/json-truncated.log"] = [f"{d / 'ann.json'}: invalid JSON at line 1"]

    d = karpathy_case("img-missing", three + [("gone.png", "test", CAPTIONS)])
    expect["manifest/img-missing.log"] = [
        f"{d / 'imgs' / 'gone.png'}: image 'gone.png' referenced by the annotations does not exist"
    ]

    def truncate(d):
        data = (d / "imgs" / "b.png").read_bytes()
        (d / "imgs" / "b.png").write_bytes(data[: len(data) // 2])

    d = karpathy_case("img-truncated", three, truncate)
    expect["manifest/img-truncated.log"] = [f"{d / 'imgs' / 'b.png'}: image 'b.png' cannot be"]
    d = karpathy_case("img-empty", three, lambda d: (d / "imgs" / "b.png").write_bytes(b""))
    expect["manifest/img-empty.log"] = [f"{d / 'imgs' / 'b.png'}: image 'b.png' is an empty file"]
    d = karpathy_case(
        "img-not-an-image", three, lambda d: (d / "imgs" / "b.png").write_text("<html>404</html>")
    )
    expect["manifest/img-not-an-image.log"] = [
        f"{d / 'imgs' / 'b.png'}: image 'b.png' cannot be decoded"
    ]
    d = karpathy_case("img-too-large", three, max_image_pixels=1000)
    expect["manifest/img-too-large.log"] = [
        "has 32x32 pixels, more than max_image_pixels=1000",
        str(d / "imgs"),
    ]
    d = karpathy_case("split-empty", [(f"{c}.png", "train", CAPTIONS) for c in "abc"])
    expect["manifest/split-empty.log"] = [
        f"{d / 'ann.json'}: the evaluated split 'test' of dataset 'split-empty' is empty"
    ]
    d = karpathy_case("dup-filenames", three + [("a.png", "test", ["again"])])
    expect["manifest/dup-filenames.log"] = [
        f"{d / 'ann.json'}: images[3]: duplicate filename 'a.png' (also images[0])"
    ]

    # Caption CSVs: unknown columns; GB18030 bytes without `encoding` in config.
    for name, header, encoding in (
        ("csv-columns", "picture,words", "utf-8"),
        ("csv-encoding", "filepath,title", "gb18030"),
    ):
        d = root / name
        for i, c in enumerate("ab"):
            save_image(d / "imgs" / f"{c}.png", seed=i)
        ann = d / "captions.csv"
        ann.write_bytes(f"{header}\na.png,机场跑道\nb.png,停车场\n".encode(encoding))
        datasets[name] = {"format": "csv", "annotations": str(ann), "images": str(d / "imgs")}
    expect["manifest/csv-columns.log"] = [
        f"{root / 'csv-columns' / 'captions.csv'}: cannot tell which column holds the image; "
        "columns are ['picture', 'words']"
    ]
    expect["manifest/csv-encoding.log"] = [
        f"{root / 'csv-encoding' / 'captions.csv'}: not valid utf-8 at byte",
        "set the dataset's 'encoding'",
    ]

    # Checkpoints: another architecture (3 vision layers instead of 2); a code-running pickle.
    ckpts = root / "ckpts"
    ckpts.mkdir()
    import open_clip

    cfg = json.loads(TINY_ARCH.read_text())
    cfg["vision_cfg"]["layers"] = 3
    torch.manual_seed(0)
    torch.save(open_clip.model.CLIP(**cfg).state_dict(), ckpts / "other-arch.pt")
    torch.save({"state_dict": {"visual.proj": Payload(marker)}}, ckpts / "evil.pt")
    models = {
        "wrong-arch": {"arch": str(TINY_ARCH), "weights": str(ckpts / "other-arch.pt")},
        "evil": {"arch": str(TINY_ARCH), "weights": str(ckpts / "evil.pt")},
    }
    expect["embed/wrong-arch/good/remoteclip.log"] = [
        f"models.wrong-arch.weights ({ckpts / 'other-arch.pt'}): checkpoint does not match the "
        "configured architecture; unexpected keys: visual.transformer.resblocks.2.",
    ]
    expect["embed/evil/good/remoteclip.log"] = [
        f"models.evil.weights: {ckpts / 'evil.pt'} needs arbitrary code to unpickle and was refused"
    ]
    config = {
        "cache_dir": str(root / "cache"),
        "datasets": datasets,
        "models": models,
        "evaluations": [{"model": "wrong-arch", "dataset": n} for n in datasets]
        + [{"model": "evil", "dataset": "good"}],
        "embed": {"batch_size": 8, "workers": 0, "device": "cpu"},
        "statistics": {"n_resamples": 10},
    }
    return config, expect


def test_bad_inputs_fail_with_named_errors_and_leave_results_clean(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    marker = tmp_path / "PWNED-by-pickle"
    config, expect = make_bad_inputs(tmp_path / "inputs", marker)
    (wd / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))

    rc, out = snakemake(wd, "--keep-going")
    assert rc != 0, out
    for log, messages in expect.items():
        text = (wd / "results/logs" / log).read_text(encoding="utf-8")
        for message in messages:
            assert message in text, f"{log}: {message!r} not in\n{text}"
            assert message in out, f"{message!r} did not reach the user"
        assert "Traceback" not in text, text  # a message, not a crash
    # The pickle's payload never ran.
    assert not marker.exists()
    # Only the good dataset's manifests were written; no partial outputs or temporary files.
    assert products(wd) == {
        "manifests/good/captions.parquet",
        "manifests/good/images.parquet",
        "manifests/good/summary.json",
    }
    assert not list((tmp_path / "inputs" / "cache").glob("features/*/*/*"))


def test_config_errors_name_the_key_and_nothing_runs(tmp_path):
    (tmp_path / "imgs").mkdir()
    save_image(tmp_path / "imgs" / "a.png", 0)
    (tmp_path / "ann.json").write_text(json.dumps(karpathy_doc([("a.png", "test", CAPTIONS)])))
    config = {
        "datasets": {
            "d": {
                "format": "karpathy-json",
                "anotations": str(tmp_path / "ann.json"),  # misspelled
                "images": str(tmp_path / "imgs"),
            }
        },
        "models": {"m": {"arch": str(TINY_ARCH), "random": 0}},
        "embed": {"batch_size": "large"},  # wrong type
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    rc, out = snakemake(tmp_path)
    assert rc != 0
    assert "invalid configuration" in out
    assert "datasets.d: Additional properties are not allowed ('anotations' was unexpected)" in out
    assert "embed.batch_size: 'large' is not of type 'integer'" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "fmt, name",
    [("karpathy-json", "../secret.png"), ("karpathy-json", "ABS"), ("csv", "sub/../../secret.png")],
    ids=["json-dotdot", "json-absolute", "csv-dotdot"],
)
def test_annotation_file_names_cannot_leave_the_image_directory(tmp_path, fmt, name):
    save_image(tmp_path / "secret.png", 1)  # outside the image directory
    save_image(tmp_path / "imgs" / "ok.png", 2)
    (tmp_path / "imgs" / "sub").mkdir()
    name = str(tmp_path / "secret.png") if name == "ABS" else name
    if fmt == "csv":
        ann = tmp_path / "caps.csv"
        ann.write_text(f"filepath,title\nok.png,fine\n{name},stolen\n")
    else:
        ann = tmp_path / "ann.json"
        doc = karpathy_doc([("ok.png", "test", ["fine"]), (name, "test", ["stolen"])])
        ann.write_text(json.dumps(doc))
    ds = Dataset(name="t", format=fmt, annotations=str(ann), images=str(tmp_path / "imgs"))
    with pytest.raises(RsmEvalError, match=r"secret\.png"):
        manifests.build(ds)


# --------------------------------------------------------------------------- hostile archive


def test_archive_escaping_its_destination_is_refused_by_the_fetch_job(http_root, tmp_path):
    www, url = http_root
    doc = karpathy_doc([("a.png", "test", CAPTIONS)])
    save_image(tmp_path / "a.png", 0)
    evil_member = "RSITMD/images/../../../../escaped.txt"
    with zipfile.ZipFile(www / "rsitmd.zip", "w") as zf:
        zf.writestr("RSITMD/dataset_RSITMD.json", json.dumps(doc))
        zf.write(tmp_path / "a.png", "RSITMD/images/a.png")
        zf.writestr(zipfile.ZipInfo(evil_member), b"pwned")
    wd = tmp_path / "wd"
    wd.mkdir()
    archive = f"{url}/rsitmd.zip"
    config = {
        "cache_dir": str(tmp_path / "cache"),
        "sources_lock": str(tmp_path / "sources.lock.yaml"),
        "datasets": {
            "evil": {
                "format": "karpathy-json",
                "annotations": {"url": archive, "member": "RSITMD/dataset_RSITMD.json"},
                "images": {"url": archive, "member": "RSITMD/images"},
            }
        },
        "models": {"m": {"arch": str(TINY_ARCH), "random": 0}},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    rc, out = snakemake(wd, "--keep-going")
    assert rc != 0, out
    # The image folder is found with the annotations' names, so the annotations job runs
    # first and meets the evil member (the whole archive is checked before anything is written).
    log = (wd / "results/logs/fetch/datasets/evil/annotations/dataset_RSITMD.json.log").read_text()
    assert "datasets.evil.annotations: refusing to extract" in log
    assert f"member {evil_member!r} contains a '..' component (path traversal)" in log
    assert "refusing to extract" in out
    assert not [p for p in tmp_path.rglob("escaped.txt")]
    # Nothing extracted, nothing half extracted; only the verified download is kept.
    left = files_under(wd / "results/sources")
    assert all("/.downloads/" in f for f in left), left
    assert not list((wd / "results").rglob("*.png"))


# --------------------------------------------------------------------------- hostile names

INJECT = "$(touch pwned-{0}) `touch pwned-{0}b`; touch pwned-{0}c & 'q' \"dq\" | ü 東京"
IMAGE_NAMES = [
    "spaces  in  name",
    "ünïcødé 東京 🛰",
    "$(touch pwned-img1)",
    "`touch pwned-img2`",
    "x; touch pwned-img3",
    "q'uote\"dq",
    "amp & touch pwned-img4 &",
    "pipe | touch pwned-img5 > out",
]
SCRIPT = "<script>alert('xss')</script> a harbour"
IMG_ONERROR = '<img src=x onerror="alert(1)"> a field'


def test_hostile_names_paths_and_captions_through_every_rule(tmp_path):
    from rsm_eval.demo import generate_benchmark

    # The dataset directory, the annotations file, every test image name, the checkpoint, the
    # architecture file and the working directory all carry shell metacharacters.
    data = tmp_path / INJECT.format("data")
    generate_benchmark(
        data / "bench",
        seed=8,
        n_train=1,
        n_val=1,
        n_test=len(IMAGE_NAMES),
        n_csv_images=1,
        n_exact_duplicates=0,
        n_near_duplicates=0,
        n_shared_caption_sets=0,
        n_padded=0,
    )
    images = data / "bench" / "images"
    doc = json.loads((data / "bench" / "dataset_demo.json").read_text())
    test_entries = [e for e in doc["images"] if e["split"] == "test"]
    for i, (entry, name) in enumerate(zip(test_entries, IMAGE_NAMES, strict=True)):
        new = f"{i} {name}{Path(entry['filename']).suffix}"
        (images / entry["filename"]).rename(images / new)
        entry["filename"] = new
    test_entries[0]["sentences"][0]["raw"] = SCRIPT
    test_entries[1]["sentences"][1]["raw"] = IMG_ONERROR
    ann = data / "bench" / "ann $(touch pwned-ann) `x`; &'\".json"
    ann.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")

    ckpt_dir = tmp_path / INJECT.format("ckpt")
    ckpt_dir.mkdir()
    ckpt = ckpt_dir / "w $(touch pwned-ckpt3)'\";&.pt"
    torch.save(tiny_state_dict(5), ckpt)
    arch = ckpt_dir / "arch `touch pwned-arch`.json"
    shutil.copy(TINY_ARCH, arch)

    wd = tmp_path / INJECT.format("wd")
    wd.mkdir()
    n = len(IMAGE_NAMES)
    config = {
        "datasets": {
            "hostile": {
                "format": "karpathy-json",
                "annotations": str(ann),
                "images": str(images),
                "expected": {"test": {"images": n, "captions": 5 * n}},
            }
        },
        "models": {"ckpt": {"arch": str(arch), "weights": str(ckpt)}},
        "embed": {"batch_size": 8, "workers": 0, "device": "cpu"},
        "statistics": {"n_resamples": 10},
    }
    (wd / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    rc, out = snakemake(wd)
    assert rc == 0, out

    ran = [str(p) for p in tmp_path.rglob("pwned*")]
    ran += [str(p) for d in (ROOT, Path.cwd()) for p in d.glob("pwned*")]
    assert ran == [], f"an injected command ran: {ran}"
    captions = pq.read_table(wd / "results/manifests/hostile/captions.parquet").to_pylist()
    test_keys = sorted({r["image_key"] for r in captions if r["split"] == "test"})
    assert test_keys == sorted(e["filename"] for e in test_entries)
    assert SCRIPT in {r["caption"] for r in captions}
    record = json.loads((wd / "results/metrics/ckpt/hostile/remoteclip.json").read_text())
    assert (record["n_images"], record["n_captions"]) == (n, 5 * n)
    csv = (wd / "results/report/retrieval.csv").read_text().splitlines()
    assert len(csv) == 2 and csv[1].startswith(f"ckpt,hostile,test,{n},{5 * n},")
    # No markup from the data reaches the HTML report unescaped.
    for page in ("report.html", "report.md"):
        text = (wd / "results/report" / page).read_text(encoding="utf-8").lower()
        assert "<script>alert" not in text and "<img src=x" not in text, page
        # The report's own sort script is the only script; the data brings none.
        assert text.count("<script") == (1 if page.endswith(".html") else 0), page


def test_braces_in_a_dataset_path_work_or_name_the_key(tmp_path):
    data = tmp_path / "data {x}"
    save_image(data / "imgs" / "a.png", 0)
    (data / "ann.json").write_text(json.dumps(karpathy_doc([("a.png", "test", CAPTIONS)])))
    config = {
        "datasets": {
            "d": {
                "format": "karpathy-json",
                "annotations": str(data / "ann.json"),
                "images": str(data / "imgs"),
            }
        },
        "models": {"m": {"arch": str(TINY_ARCH), "random": 0}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    rc, out = snakemake(tmp_path, "--dry-run")
    assert rc == 0 or "datasets.d." in out, out
