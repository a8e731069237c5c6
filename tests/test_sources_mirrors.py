"""The benchmarks' real public layouts, served by a loopback HTTP server: GitHub raw/ -> LFS
redirects, mirrors tried in order, archives with an extra top folder or a renamed directory,
a RAR inside a zip, a gb18030 CSV of the test split, and UC Merced renamed into UCM-Captions."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from loopback import ServerState, serve
from rar4 import rar4
from rsm_eval import sources
from rsm_eval.errors import RsmEvalError
from rsm_eval.sources import (
    ChecksumMismatchError,
    Layout,
    LayoutError,
    LockFile,
    MirrorsFailedError,
    MissingSourcesError,
    Source,
    StderrProgress,
    VerificationError,
    materialize,
    recipes,
)

COMMIT = "fc33b4555e4baa4d2f05ff0449479c89da2eeac2"
UCM_CLASSES = [
    "agricultural",
    "airplane",
    "baseballdiamond",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golfcourse",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetanks",
    "tenniscourt",
]


@pytest.fixture(autouse=True)
def _no_proxy_no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(sources.http, "_sleep", lambda s: None)


@pytest.fixture
def server() -> Iterator[ServerState]:
    with serve() as state:
        yield state


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _image(i: int) -> bytes:
    """Distinct small 'image' bytes (the fetch stage never decodes images)."""
    return b"II*\0" + hashlib.sha256(str(i).encode()).digest() * 20


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _karpathy(names: list[str]) -> bytes:
    images = [
        {
            "filename": n,
            "split": "test",
            "sentences": [{"raw": f"caption {j} of {n}"} for j in (0, 1)],
        }
        for n in names
    ]
    return json.dumps({"images": images}).encode()


def _csv(rows: list[tuple[str, str]], header=("filepath", "title"), encoding="utf-8") -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode(encoding)


def _images_layout(annotations: Path, **kw) -> Layout:
    return Layout(role="images", annotations=str(annotations), **kw)


# --------------------------------------------------------------------------- RSICD (GitHub LFS)


def test_github_raw_redirects_to_lfs_storage_and_resumes(server: ServerState, tmp_path: Path):
    """RSICD_optimal's raw/ URL answers 302 to the LFS host; the transfer is cut half-way and
    resumed there with Range; the zip has an extra top folder above RSICD_images/."""
    names = [f"{i:05d}.jpg" for i in range(6)]
    archive = _zip({f"RSICD_optimal-main/RSICD_images/{n}": _image(i) for i, n in enumerate(names)})
    oid = _sha(archive)
    raw = f"/201528014227051/RSICD_optimal/raw/{COMMIT}/RSICD_images.zip"
    storage = f"/github-cloud.githubusercontent.com/alambic/media/{oid}"
    server.redirects[raw] = storage
    server.files[storage] = archive
    server.drop_after[storage] = len(archive) // 2
    ann = tmp_path / "dataset_rsicd.json"
    ann.write_bytes(_karpathy(names))
    src = Source.from_config(
        "datasets.rsicd.images",
        {"url": server.url(raw), "sha256": oid, "size": len(archive), "member": "RSICD_images"},
    )
    dest = materialize(
        src, tmp_path / "RSICD_images", is_dir=True, layout=_images_layout(ann), progress=None
    )
    assert sorted(p.name for p in dest.iterdir()) == names
    assert (dest / names[3]).read_bytes() == _image(3)
    assert server.count(raw) == 2  # the resumed request goes through the redirect again
    assert server.ranged(storage) == [f"bytes={len(archive) // 2}-"]


def test_checksum_mismatch_names_both_hashes(server: ServerState, tmp_path: Path):
    server.files["/a.json"] = b'{"images": []}'
    wrong = "0" * 64
    src = Source.from_config(
        "datasets.x.annotations", {"url": server.url("/a.json"), "sha256": wrong}
    )
    with pytest.raises(ChecksumMismatchError) as info:
        materialize(src, tmp_path / "a.json")
    assert wrong in str(info.value) and _sha(b'{"images": []}') in str(info.value)
    assert not (tmp_path / "a.json").exists()


# --------------------------------------------------------------------------- mirrors


def test_failing_url_falls_back_to_the_next_mirror(server, tmp_path, capsys):
    data = b"weights" * 1000
    server.fail_with["/primary.pt"] = [503] * 20
    server.files["/mirror2.pt"] = data
    lock = LockFile(tmp_path / "sources.lock.yaml")
    src = Source.from_config(
        "models.m.weights",
        {
            "url": server.url("/primary.pt"),
            "mirrors": [server.url("/gone.pt"), server.url("/mirror2.pt")],
        },
    )
    dest = materialize(src, tmp_path / "m.pt", lock=lock)
    assert dest.read_bytes() == data
    err = capsys.readouterr().err
    assert "trying the next mirror" in err and "HTTP 503" in err and "HTTP 404" in err
    entry = yaml.safe_load((tmp_path / "sources.lock.yaml").read_text())
    locked = entry[f"models.m.weights (mirror {server.url('/mirror2.pt')})"]
    assert locked["sha256"] == _sha(data)
    # The next call reuses the file without any request.
    before = len(server.requests)
    materialize(src, tmp_path / "m.pt", lock=lock)
    assert len(server.requests) == before


def test_every_mirror_failing_lists_each_url_and_reason(server, tmp_path):
    server.files["/a.bin"] = b"aaa"
    server.files["/b.bin"] = b"bbb"
    want = _sha(b"expected")
    src = Source.from_config(
        "datasets.x.annotations",
        {"url": server.url("/a.bin"), "sha256": want, "mirrors": [server.url("/b.bin")]},
    )
    with pytest.raises(MirrorsFailedError) as info:
        materialize(src, tmp_path / "x.json")
    text = str(info.value)
    assert server.url("/a.bin") in text and server.url("/b.bin") in text
    assert want in text and _sha(b"aaa") in text and _sha(b"bbb") in text
    assert "path:" in text  # what to do when every mirror is down


def test_unreachable_everywhere_is_a_missing_source(tmp_path):
    src = Source.from_config(
        "datasets.x.images",
        {"url": "http://127.0.0.1:9/a.zip", "mirrors": ["http://127.0.0.1:9/b.zip"]},
    )
    with pytest.raises(MissingSourcesError) as info:
        materialize(src, tmp_path / "images", is_dir=True)
    assert "a.zip or http://127.0.0.1:9/b.zip" in str(info.value)


def test_md5_is_verified_and_the_sha256_locked(server, tmp_path):
    data = b"ucmerced" * 100
    server.files["/u.bin"] = data
    lock = LockFile(tmp_path / "lock.yaml")
    good = hashlib.md5(data).hexdigest()
    src = Source.from_config("k.good", {"url": server.url("/u.bin"), "md5": good})
    materialize(src, tmp_path / "u.bin", lock=lock)
    assert yaml.safe_load(lock.path.read_text())["k.good"]["sha256"] == _sha(data)
    bad = Source.from_config("k.bad", {"url": server.url("/u.bin"), "md5": "f" * 32})
    with pytest.raises(
        ChecksumMismatchError, match=f"md5 mismatch.*expected {'f' * 32}, got {good}"
    ):
        materialize(bad, tmp_path / "v.bin", lock=lock)


# --------------------------------------------------------------------------- layout discovery


def _skyscript_zip(n: int = 4, top: str = "RSITMD", imgdir: str = "images") -> tuple[bytes, list]:
    """SkyScript's benchmark zip: <top>/<top>_img_txt_pairs_test.csv with paths from the
    benchmark root, and the images beside it."""
    names = [f"airport_{i}.tif" for i in range(n)]
    rows = [
        (f"{top}/{imgdir}/{m}", f"an airport number {i} {j}")
        for i, m in enumerate(names)
        for j in range(2)
    ]
    members = {f"{top}/{top}_img_txt_pairs_test.csv": _csv(rows)}
    members |= {f"{top}/{imgdir}/{m}": _image(i) for i, m in enumerate(names)}
    return _zip(members), names


def test_csv_and_images_found_with_an_extra_top_folder_and_renamed_dirs(server, tmp_path):
    zipped, names = _skyscript_zip()
    # The mirror wraps everything in one more folder and renamed images/ to imgs/.
    data, _ = _skyscript_zip(imgdir="imgs")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        wrapped = _zip({f"benchmark/{i.filename}": zf.read(i) for i in zf.infolist()})
    server.files["/RSITMD.zip"] = wrapped
    lay = {"format": "csv"}
    ann_src = Source.from_config(
        "datasets.rsitmd.annotations",
        {"url": server.url("/RSITMD.zip"), "member": "RSITMD/RSITMD_img_txt_pairs_test.csv"},
    )
    ann = materialize(ann_src, tmp_path / "ann.csv", layout=Layout(role="annotations", **lay))
    assert ann.read_text().startswith("filepath,title")
    img_src = Source.from_config("datasets.rsitmd.images", {"url": server.url("/RSITMD.zip")})
    images = materialize(
        img_src, tmp_path / "images", is_dir=True, layout=_images_layout(ann, **lay)
    )
    assert sorted(p.name for p in images.iterdir()) == names  # the folder that holds them
    assert server.count("/RSITMD.zip") == 1  # one download for both sources


def test_annotation_file_found_by_content_when_the_member_is_renamed(server, tmp_path):
    data, names = _skyscript_zip()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {
            i.filename.replace("_img_txt_pairs_test", "_test_v2"): zf.read(i) for i in zf.infolist()
        }
    members["RSITMD/notes.csv"] = _csv([("x", "y")], header=("a", "b"))  # no image column
    server.files["/r.zip"] = _zip(members)
    src = Source.from_config(
        "d.annotations",
        {"url": server.url("/r.zip"), "member": "RSITMD/RSITMD_img_txt_pairs_test.csv"},
    )
    ann = materialize(src, tmp_path / "a.csv", layout=Layout(role="annotations", format="csv"))
    assert ann.read_bytes() == members["RSITMD/RSITMD_test_v2.csv"]


def test_no_fitting_layout_lists_what_was_found(server, tmp_path):
    data, _ = _skyscript_zip()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist() if i.filename.endswith(".csv")}
    members["RSITMD/images/airport_0.tif"] = _image(0)  # only one of the four images
    server.files["/r.zip"] = _zip(members)
    src = Source.from_config("d.annotations", {"url": server.url("/r.zip"), "member": "nope.csv"})
    with pytest.raises(LayoutError) as info:
        materialize(src, tmp_path / "a.csv", layout=Layout(role="annotations", format="csv"))
    text = str(info.value)
    assert "RSITMD/RSITMD_img_txt_pairs_test.csv" in text and "1 of 4" in text
    assert not (tmp_path / "a.csv").exists()


def test_geo_rsclip_gb18030_csv(server, tmp_path):
    """GeoRSCLIP's rs5m_test_data.zip: rsicd/rsicd_test.csv in gb18030 (filename,title, names
    relative to rsicd/RSICD_images/), next to other benchmarks' folders."""
    names = ["00001.jpg", "00002.jpg", "00003.jpg"]
    rows = [(n, f"一个机场 airport {n} {j}") for n in names for j in range(2)]
    members = {"rsicd/rsicd_test.csv": _csv(rows, ("filename", "title"), "gb18030")}
    members |= {f"rsicd/RSICD_images/{n}": _image(i) for i, n in enumerate(names)}
    members |= {
        "rsitmd/images/00001.jpg": _image(99),
        "rsitmd/rsitmd_test.csv": b"filename,title\n",
    }
    server.files["/rs5m_test_data.zip"] = _zip(members)
    url = server.url("/rs5m_test_data.zip")
    read = {"format": "csv", "encoding": "gb18030"}
    ann = materialize(
        Source.from_config("d.annotations", {"url": url, "member": "rsicd/rsicd_test.csv"}),
        tmp_path / "rsicd_test.csv",
        layout=Layout(role="annotations", **read),
    )
    with pytest.raises(UnicodeDecodeError):
        ann.read_bytes().decode("utf-8")
    images = materialize(
        Source.from_config("d.images", {"url": url}),
        tmp_path / "images",
        is_dir=True,
        layout=_images_layout(ann, **read),
    )
    assert sorted(p.name for p in images.iterdir()) == names
    assert (images / "00002.jpg").read_bytes() == _image(1)


def test_two_folders_with_all_images_is_ambiguous(server, tmp_path):
    names = ["a.tif", "b.tif"]
    members = {f"{d}/{n}": _image(i) for d in ("copy1", "copy2") for i, n in enumerate(names)}
    server.files["/two.zip"] = _zip(members)
    ann = tmp_path / "ann.json"
    ann.write_bytes(_karpathy(names))
    src = Source.from_config("d.images", {"url": server.url("/two.zip")})
    with pytest.raises(LayoutError, match="copy1, copy2; set 'member'"):
        materialize(src, tmp_path / "images", is_dir=True, layout=_images_layout(ann))
    src = Source.from_config("d.images", {"url": server.url("/two.zip"), "member": "copy2"})
    got = materialize(src, tmp_path / "images", is_dir=True, layout=_images_layout(ann))
    assert sorted(p.name for p in got.iterdir()) == names


# --------------------------------------------------------------------------- RAR, UCM


def test_rar_inside_zip_like_ucm_captions(server, tmp_path):
    """The UCM-Captions authors' zip: dataset.json and imgs.rar (read by libarchive)."""
    names = [f"{i}.tif" for i in range(1, 6)]
    rar = rar4({"imgs": None, **{f"imgs/{n}": _image(i) for i, n in enumerate(names)}})
    server.files["/UCM_captions.zip"] = _zip(
        {"UCM_captions/dataset.json": _karpathy(names), "UCM_captions/imgs.rar": rar}
    )
    url = server.url("/UCM_captions.zip")
    ann = materialize(
        Source.from_config("ucm.annotations", {"url": url, "member": "UCM_captions/dataset.json"}),
        tmp_path / "dataset.json",
        layout=Layout(role="annotations"),
    )
    for member in ("UCM_captions/imgs.rar", "UCM_captions/imgs.rar/imgs", "imgs.rar/imgs"):
        dest = tmp_path / f"imgs-{member.count('/')}-{len(member)}"
        got = materialize(
            Source.from_config("ucm.images", {"url": url, "member": member}),
            dest,
            is_dir=True,
            layout=_images_layout(ann),
        )
        assert sorted(p.name for p in got.iterdir()) == sorted(names), member
        assert (got / "3.tif").read_bytes() == _image(2)


def test_rar_with_traversal_is_refused(tmp_path):
    path = tmp_path / "evil.rar"
    path.write_bytes(rar4({"../outside.txt": b"x"}))
    with pytest.raises(sources.UnsafeArchiveError, match="path traversal"):
        sources.safe_extract(path, tmp_path / "out", key="k")
    assert not (tmp_path / "outside.txt").exists()


def _fake_ucmerced(tmp_path: Path, per_class: int = 3) -> tuple[Path, dict[str, bytes]]:
    """A UC Merced-style class tree and a UCM-Captions table for it (same numbering rule)."""
    files, lines = {}, ["# test table", "ucm_captions_filename\tclass\tucmerced_filename\tsha256"]
    for ci, cls in enumerate(UCM_CLASSES):
        for nn in range(per_class):
            rel = f"{cls}/{cls}{nn:02d}.tif"
            files[rel] = _image(ci * 1000 + nn)
            lines.append(f"{100 * ci + nn + 1}.tif\t{cls}\t{rel}\t{_sha(files[rel])}")
    table = tmp_path / "table.tsv"
    table.write_text("\n".join(lines) + "\n")
    return table, files


def test_ucmerced_renamed_into_ucm_numbering(server, tmp_path, monkeypatch):
    table, files = _fake_ucmerced(tmp_path)
    monkeypatch.setattr(recipes, "UCM_TABLE", table)
    server.fail_with["/weegee/UCMerced_LandUse.zip"] = [404]
    # torchgeo's mirror, with the layout UCMerced_LandUse/Images/<class>/<class>NN.tif
    archive = _zip({f"UCMerced_LandUse/Images/{rel}": b for rel, b in files.items()})
    server.files["/torchgeo/UCMerced_LandUse.zip"] = archive
    src = Source.from_config(
        "datasets.ucm.images",
        {
            "url": server.url("/weegee/UCMerced_LandUse.zip"),
            "mirrors": [
                {
                    "url": server.url("/torchgeo/UCMerced_LandUse.zip"),
                    "md5": hashlib.md5(archive).hexdigest(),
                }
            ],
            "member": "UCMerced_LandUse/Images",
            "recipe": "ucm-captions",
        },
    )
    dest = materialize(src, tmp_path / "imgs", is_dir=True)
    assert (dest / "1.tif").read_bytes() == files["agricultural/agricultural00.tif"]
    assert (dest / "2003.tif").read_bytes() == files["tenniscourt/tenniscourt02.tif"]
    assert (dest / "103.tif").read_bytes() == files["airplane/airplane02.tif"]
    assert len(list(dest.iterdir())) == 21 * 3
    stamp = json.loads((tmp_path / ".imgs.source.json").read_text())
    assert stamp["recipe"] == "ucm-captions" and "torchgeo" in stamp["origin"]


def test_ucmerced_missing_or_changed_image_stops_with_both_hashes(tmp_path, monkeypatch):
    table, files = _fake_ucmerced(tmp_path, per_class=2)
    monkeypatch.setattr(recipes, "UCM_TABLE", table)
    changed = dict(files)
    changed["beach/beach01.tif"] = b"recompressed"
    del changed["river/river00.tif"]
    archive = tmp_path / "UCMerced_LandUse.zip"
    archive.write_bytes(_zip({f"UCMerced_LandUse/Images/{r}": b for r, b in changed.items()}))
    src = Source.from_config("ucm.images", {"path": str(archive), "recipe": "ucm-captions"})
    with pytest.raises(VerificationError) as info:
        materialize(src, tmp_path / "imgs", is_dir=True)
    text = str(info.value)
    assert "2 of 42" in text
    assert "beach/beach01.tif (becomes 302.tif)" in text
    assert _sha(b"recompressed") in text and _sha(files["beach/beach01.tif"]) in text
    assert "river/river00.tif (becomes 1601.tif): missing" in text
    assert not (tmp_path / "imgs").exists()


def test_shipped_ucm_table_follows_the_numbering_rule():
    table = recipes.ucm_table()
    assert len(table) == 2100 and len({sha for *_, sha in table}) >= 2090
    for name, rel, sha in table:
        cls, stem = rel.split("/")
        nn = int(re.fullmatch(rf"{cls}(\d\d)\.tif", stem).group(1))
        assert name == f"{100 * UCM_CLASSES.index(cls) + nn + 1}.tif"
        assert re.fullmatch(r"[0-9a-f]{64}", sha)


# --------------------------------------------------------------------------- progress, config


def test_progress_lines_give_bytes_rate_and_time_left(capsys):
    times = iter([0.0, 1.0, 2.0, 10.0, 12.0])
    report = StderrProgress("k: url", interval=5.0, clock=lambda: next(times))
    mib = 1 << 20
    report(0, 100 * mib)
    report(10 * mib, 100 * mib)  # under the interval: no line
    report(20 * mib, 100 * mib)
    report(50 * mib, 100 * mib)  # 10 s: 5.0 MiB/s, 10 s left
    report(100 * mib, 100 * mib)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "k: url: starting (100.0 MiB)"
    assert lines[1] == "k: url: 50.0 of 100.0 MiB (50%), 5.0 MiB/s, 10s left"
    assert lines[2].startswith("k: url: 100.0 of 100.0 MiB (100%)") and "done in 12s" in lines[2]
    assert len(lines) == 3


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"url": "https://a/x", "mirrors": ["ftp://b/x"]}, "http"),
        ({"url": "https://a/x", "mirrors": [{"sha256": "0" * 64}]}, "mapping with 'url'"),
        ({"url": "https://a/x", "mirrors": [{"url": "https://b", "bogus": 1}]}, "bogus"),
        ({"path": "x", "mirrors": ["https://b/x"]}, "needs a 'url'"),
        ({"url": "https://a/x", "md5": "xyz"}, "32 hexadecimal"),
        ({"url": "https://a/x", "recipe": "guess"}, "unknown recipe"),
    ],
)
def test_bad_mirror_entries_are_refused(entry, needle):
    with pytest.raises(RsmEvalError, match=needle):
        Source.from_config("k", entry)


def test_shipped_config_fetches_the_three_benchmarks():
    """config.yaml: RSITMD, RSICD and UCM-Captions are URL sources (no manual step), each
    told how its dataset names images; UCM's images are UC Merced renamed by the recipe."""
    from conftest import ROOT
    from rsm_eval import config

    cfg = config.load(yaml.safe_load((ROOT / "config.yaml").read_text()))
    for name in ("rsitmd", "rsicd", "ucm"):
        ds = cfg.datasets[name]
        ann, img = cfg.sources[ds.annotations], cfg.sources[ds.images]
        assert "url" in ann.entry and "url" in img.entry, name
        Source.from_config(ann.key, ann.entry), Source.from_config(img.key, img.entry)
        assert ann.layout["role"] == "annotations" and img.layout["annotations"] == ds.annotations
    ucm = cfg.sources[cfg.datasets["ucm"].images].entry
    assert ucm["recipe"] == "ucm-captions" and ucm["mirrors"][0]["sha256"]
    rsicd = cfg.sources[cfg.datasets["rsicd"].images].entry
    assert rsicd["sha256"].startswith("0d3ebda1") and rsicd["size"] == 484955574
    assert "path" in cfg.sources[cfg.datasets["rsmitd"].images].entry  # still manual
