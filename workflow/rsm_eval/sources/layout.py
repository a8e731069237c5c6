"""Find a dataset's annotation file and image folder inside an extracted archive.

Mirrors pack the same data differently: an extra top folder, a renamed image directory, a
CSV of the test split next to its images, an archive inside the archive (``imgs.rar``). The
configured ``member`` is tried first (exactly, then through nested archives, then as the
unique path ending in it); when that does not fit, the tree is searched by content: an
annotation file (Karpathy JSON, or a CSV with image and caption columns) whose image names
all resolve under one folder, and that folder. Nothing is guessed: when no candidate, or
more than one, fits, the error lists what was found.
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rsm_eval.errors import RsmEvalError

from .archives import ARCHIVE_SUFFIXES, archive_kind, safe_extract
from .spec import LayoutError

_JSON = (".json",)
_CSV = (".csv", ".tsv", ".txt")
_LIST = 12  # candidates shown in an error


@dataclass(frozen=True)
class Layout:
    """What the rest of the dataset says about a source: its role and how to read names.

    role "annotations": the source is the dataset's annotation file in ``format``.
    role "images": the source is the image folder that ``annotations`` (a local file) names.
    """

    role: str
    format: str = "karpathy-json"
    annotations: str | None = None
    encoding: str = "utf-8"
    separator: str = ","
    columns: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict | None) -> Layout | None:
        if not data:
            return None
        try:
            return cls(**data)
        except TypeError as exc:
            raise RsmEvalError(f"bad layout description {data!r}: {exc}") from None


def read_names(path: Path, layout: Layout, fmt: str | None = None) -> list[str]:
    """The image names an annotation file refers to, in file order, without repeats."""
    from rsm_eval import manifests  # the one reader of both formats

    fmt = fmt or layout.format
    if fmt == "karpathy-json":
        rows = manifests.read_karpathy(path, layout.encoding)
    else:
        rows = manifests.read_caption_csv(
            path, encoding=layout.encoding, separator=layout.separator, columns=layout.columns
        )
    return list(dict.fromkeys(r.image_key.replace("\\", "/") for r in rows))


def common_prefix(names: list[str]) -> str:
    """The folders every name starts with ('' if none): 'RSICD/images/a.jpg' -> 'RSICD/images'."""
    return posixpath.commonpath([posixpath.dirname(n) for n in names]) if names else ""


def strip_prefix(names: list[str], prefix: str) -> list[str]:
    return [n[len(prefix) + 1 :] for n in names] if prefix else list(names)


def _files(tree: Path) -> set[str]:
    out = set()
    for current, _dirs, files in os.walk(tree):
        rel = os.path.relpath(current, tree)
        for f in files:
            out.add(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return out


def image_roots(tree: Path, names: list[str], files: set[str] | None = None) -> list[str]:
    """Folders of tree (relative, '' for tree) under which every name resolves.

    Names resolve with their common leading folders removed (a CSV giving 'RSICD/images/a.jpg'
    relative to some benchmark root finds the folder that holds a.jpg itself), so the result
    is always the folder that directly holds the images, as in the Karpathy layout.
    """
    files = _files(tree) if files is None else files
    rel = strip_prefix(names, common_prefix(names))
    if not rel:
        return []
    first = rel[0]
    roots = {f[: -len(first)].rstrip("/") for f in files if f == first or f.endswith("/" + first)}
    return sorted(r for r in roots if all((f"{r}/{n}" if r else n) in files for n in rel))


def _partial_counts(names: list[str], files: set[str]) -> Counter[str]:
    """How many names resolve under each folder (with their common folders removed)."""
    rel = strip_prefix(names, common_prefix(names))
    by_tail: dict[str, list[str]] = {}
    for f in files:
        by_tail.setdefault(f.rsplit("/", 1)[-1], []).append(f)
    counts: Counter[str] = Counter()
    for n in rel[:5000]:
        for f in by_tail.get(n.rsplit("/", 1)[-1], []):
            if f == n or f.endswith("/" + n):
                counts[f[: -len(n)].rstrip("/")] += 1
    return counts


def _best_partial(names: list[str], files: set[str]) -> str:
    """Where most names resolve, for the error message."""
    best = _partial_counts(names, files).most_common(3)
    return "; ".join(f"{r or '.'}: {c} of {len(names)}" for r, c in best) or "none resolve anywhere"


def fullest_folder(tree: Path, names: list[str]) -> Path | None:
    """The one folder under which most names resolve (None when none or tied).

    Only for a recipe, which then checks every file by its hash: the folder decides where to
    look, never what is accepted.
    """
    best = _partial_counts(names, _files(tree)).most_common(2)
    if not best or (len(best) == 2 and best[0][1] == best[1][1]):
        return None
    return tree / best[0][0] if best[0][0] else tree


def _open_nested(path: Path, key: str) -> Path:
    """Extract an archive found inside an archive next to it (once) and return that folder."""
    out = path.with_name(path.name + ".d")
    if not out.is_dir():
        safe_extract(path, out, key=key)
    return out


def resolve_member(tree: Path, member: str, key: str, *, want_dir: bool) -> Path | None:
    """tree/member, going through nested archives ('imgs.rar/imgs'); a unique suffix match
    when the exact path is missing (an extra top folder); None when neither exists."""
    current = tree
    parts = [p for p in member.split("/") if p]
    for i, part in enumerate(parts):
        nxt = current / part
        if not nxt.exists():
            break
        nested = nxt.is_file() and nxt.name.lower().endswith(ARCHIVE_SUFFIXES)
        if nested and archive_kind(nxt) and (i < len(parts) - 1 or want_dir):
            nxt = _open_nested(nxt, key)
        current = nxt
    else:
        return current
    files = _files(tree)
    dirs = {f.rsplit("/", k)[0] for f in files for k in range(1, f.count("/") + 1)}

    def unique(tail: str, pool: set[str]) -> str | None:
        hits = [p for p in pool if p == tail or p.endswith("/" + tail)]
        return hits[0] if len(hits) == 1 else None

    hit = unique(member, dirs if want_dir else files)
    if hit is not None:
        return tree / hit
    # An extra top folder above a nested archive: find the archive, then go on inside it.
    for i, part in enumerate(parts):
        if part.lower().endswith(ARCHIVE_SUFFIXES):
            nested = unique("/".join(parts[: i + 1]), files)
            if nested is not None and nested != "/".join(parts[: i + 1]):
                return resolve_member(
                    tree, "/".join([nested, *parts[i + 1 :]]), key, want_dir=want_dir
                )
    return None


def find_annotations(tree: Path, layout: Layout, key: str) -> Path:
    """The one annotation file in tree whose image names all resolve under one folder."""
    files = _files(tree)
    suffixes = _JSON if layout.format == "karpathy-json" else _CSV
    found, tried = [], []
    for rel in sorted(f for f in files if f.lower().endswith(suffixes)):
        try:
            names = read_names(tree / rel, layout)
        except RsmEvalError as exc:
            tried.append(f"{rel} (not {layout.format}: {str(exc).split(': ', 1)[-1][:80]})")
            continue
        roots = image_roots(tree, names, files)
        if roots:
            found.append(rel)
        else:
            tried.append(f"{rel} ({len(names)} image names, {_best_partial(names, files)})")
    if len(found) == 1:
        return tree / found[0]
    what = "annotation files whose images all resolve" if found else "annotation candidates"
    listed = found or tried
    raise LayoutError(
        f"{key}: cannot tell which file of the archive holds the {layout.format} annotations: "
        f"{len(found)} fit. {what.capitalize()}: {', '.join(listed[:_LIST]) or '(none)'}; "
        f"{len(files)} files in all. Set 'member' to the annotation file's path in the archive"
    )


def find_images(tree: Path, names: list[str], key: str, hint: Path | None) -> Path:
    """The folder of tree that holds every named image (the hint, when it does)."""
    files = _files(tree)
    roots = image_roots(tree, names, files)
    if hint is not None and hint.is_dir():
        rel = hint.relative_to(tree).as_posix() if hint != tree else ""
        if rel in roots:
            return hint
    if len(roots) == 1:
        return tree / roots[0] if roots[0] else tree
    if not roots:
        raise LayoutError(
            f"{key}: no folder of the archive holds all {len(names)} images the annotations "
            f"name (e.g. {', '.join(names[:3])}); best matches: "
            f"{_best_partial(names, files)}. Is this mirror the same release (a mirror "
            "of the test split cannot serve a full annotation file)?"
        )
    raise LayoutError(
        f"{key}: {len(roots)} folders of the archive each hold all {len(names)} images: "
        f"{', '.join(r or '.' for r in roots[:_LIST])}; set 'member' to the one to use"
    )


def locate(tree: Path, member: str | None, layout: Layout | None, key: str, want_dir: bool):
    """The path inside an extracted tree to use for a source (see the module docstring)."""
    hint = resolve_member(tree, member, key, want_dir=want_dir) if member else None
    if layout is None:
        if member is None:
            return tree
        if hint is None:
            raise LayoutError(
                f"{key}: member {member!r} not found in the archive, and nothing ends with it; "
                f"it contains e.g.: {', '.join(sorted(_files(tree))[:_LIST])}"
            )
        return hint
    if layout.role == "annotations":
        if hint is not None and hint.is_file():
            return hint
        return find_annotations(tree, layout, key)
    if layout.annotations is None:
        raise RsmEvalError(f"{key}: an images layout needs the annotation file")
    names = read_names(Path(layout.annotations), layout)
    return find_images(tree, names, key, hint)
