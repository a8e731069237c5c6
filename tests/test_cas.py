"""Content addresses: memoised file hashing, canonical digests, atomic writes."""

from __future__ import annotations

import hashlib
import os
import time

import pytest
from rsm_eval import cas
from rsm_eval.errors import RsmEvalError


def test_file_hash_is_content_and_memo_follows_stat(tmp_path):
    memo = cas.HashMemo(tmp_path / "memo.sqlite")
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    assert memo.file(f) == hashlib.sha256(b"hello").hexdigest()
    # A touch changes the stat: the file is read again and, of course, hashes the same.
    t = time.time() + 10
    os.utime(f, (t, t))
    assert memo.file(f) == hashlib.sha256(b"hello").hexdigest()
    f.write_bytes(b"world")
    assert memo.file(f) == hashlib.sha256(b"world").hexdigest()


def test_memo_avoids_rereading(tmp_path, monkeypatch):
    memo = cas.HashMemo(tmp_path / "memo.sqlite")
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 1000)
    memo.file(f)
    calls = []
    monkeypatch.setattr(cas, "_hash_stream", lambda p: calls.append(p) or "never")
    assert memo.file(f) == hashlib.sha256(b"x" * 1000).hexdigest()
    assert calls == []
    # A fresh memo object on the same database also remembers.
    assert cas.HashMemo(tmp_path / "memo.sqlite").file(f) != "never"


def test_tree_address_ignores_mtime_and_location(tmp_path):
    memo = cas.HashMemo(tmp_path / "memo.sqlite")
    for root in (tmp_path / "one", tmp_path / "two"):
        (root / "sub").mkdir(parents=True)
        (root / "a.tif").write_bytes(b"A")
        (root / "sub" / "b.jpg").write_bytes(b"B")
    assert memo.tree(tmp_path / "one") == memo.tree(tmp_path / "two")
    (tmp_path / "two" / "a.tif").write_bytes(b"changed")
    assert memo.tree(tmp_path / "one") != memo.tree(tmp_path / "two")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RsmEvalError, match="not found"):
        cas.HashMemo(tmp_path / "m.sqlite").file(tmp_path / "nope.pt")


def test_digest_is_canonical():
    assert cas.digest({"b": 1, "a": [1, 2]}) == cas.digest({"a": [1, 2], "b": 1})
    assert cas.digest({"a": 1}) != cas.digest({"a": 2})


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError), cas.atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
    cas.write_json_atomic(dest, {"x": 1})
    assert dest.read_text().strip() == '{\n  "x": 1\n}'


def test_code_version_tracks_source():
    v = cas.code_version("rsm_eval.metrics")
    assert v == cas.code_version("rsm_eval.metrics")
    assert v != cas.code_version("rsm_eval.report")


STAGES = {
    "manifest": "manifests",
    "embed": "embeddings",
    "evaluate": "evaluate",
    "statistics": "stats",
    "report": "report",
    "leakage": "leakage",
    "finetune": "finetune",
    "classify": "classify",
    "localize": "localize",
    "localize_report": "localize_report",
    "scene_manifest": "scenes",
    "scene_eval": "scene_eval",
    "probe": "probe",
    "scene_report": "scene_report",
}


def test_import_closure_follows_lazy_and_indirect_imports():
    leakage = cas.import_closure("rsm_eval.leakage")
    # leakage embeds candidate images lazily (inside a function) through embeddings, which
    # uses models and featstore: all of them are part of its code.
    for used in ("rsm_eval.embeddings", "rsm_eval.models", "rsm_eval.featstore"):
        assert used in leakage
    assert "rsm_eval.models" in cas.import_closure("rsm_eval.classify")
    # The CLI's module-level imports count, not the stages it dispatches to.
    assert "rsm_eval.cli" in leakage
    assert "rsm_eval.finetune" not in cas.import_closure("rsm_eval.manifests")
    # The front end is a subpackage: its modules' source counts, their lazy imports do not.
    manifests = cas.import_closure("rsm_eval.manifests")
    assert {"rsm_eval.cli.retrieval", "rsm_eval.cli.args"} <= set(manifests)
    assert not {"rsm_eval.retrieve", "rsm_eval.embeddings", "rsm_eval.gpus"} & set(manifests)
    with pytest.raises(RsmEvalError, match="rsm_eval.nope"):
        cas.import_closure("rsm_eval.nope")


def _stage_versions(pkg_root):
    import json
    import subprocess
    import sys

    code = (
        "import json; from rsm_eval import cas; "
        f"print(json.dumps({{s: cas.code_version('rsm_eval.' + m)"
        f" for s, m in {STAGES!r}.items()}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(pkg_root)},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_editing_a_module_changes_exactly_the_stages_that_import_it(tmp_path):
    import shutil
    from pathlib import Path

    shutil.copytree(Path(cas.__file__).parent, tmp_path / "rsm_eval")
    before = _stage_versions(tmp_path)
    for edited in ("featstore", "report", "metrics"):
        module = tmp_path / "rsm_eval" / f"{edited}.py"
        if not module.exists():  # a subpackage
            module = tmp_path / "rsm_eval" / edited / "__init__.py"
        with module.open("a") as fh:
            fh.write("\n# edited\n")
        after = _stage_versions(tmp_path)
        changed = {s for s in STAGES if after[s] != before[s]}
        expected = {
            s
            for s, m in STAGES.items()
            if f"rsm_eval.{edited}" in cas.import_closure(f"rsm_eval.{m}")
        }
        assert changed == expected, edited
        before = after
    assert {"embed", "classify", "leakage"} <= {
        s for s, m in STAGES.items() if "rsm_eval.featstore" in cas.import_closure(f"rsm_eval.{m}")
    }


def test_replace_path_swaps_trees_files_and_links(tmp_path):
    dest = tmp_path / "out"

    def staged(name: str, text: str):
        tree = tmp_path / name
        (tree / "sub").mkdir(parents=True)
        (tree / "sub" / "f.txt").write_text(text)
        return tree

    cas.replace_path(staged("a", "first"), dest)  # nothing there yet
    assert (dest / "sub" / "f.txt").read_text() == "first"
    cas.replace_path(staged("b", "second"), dest)  # a tree replaces a tree, as a whole
    assert sorted(p.name for p in dest.rglob("*")) == ["f.txt", "sub"]
    assert (dest / "sub" / "f.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or trash left
    link = tmp_path / "link"
    link.symlink_to(dest)
    cas.replace_path(staged("c", "third"), link)  # a link is replaced, not followed
    assert not link.is_symlink() and (link / "sub" / "f.txt").read_text() == "third"
    assert (dest / "sub" / "f.txt").read_text() == "second"
    single = tmp_path / "one.txt"
    single.write_text("new")
    cas.replace_path(single, dest)  # a file replaces a tree
    assert dest.read_text() == "new" and not single.exists()
    cas.replace_path(staged("d", "fourth"), dest)  # and a tree replaces a file
    assert (dest / "sub" / "f.txt").read_text() == "fourth"
