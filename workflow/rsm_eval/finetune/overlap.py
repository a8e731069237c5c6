"""Split discipline: a training set must not hold images of an evaluated test split.

Training on an image of an evaluated test split inflates that split's numbers. Images are
compared by content (sha256), so a renamed copy is caught; a re-encoded or brightness-shifted
near duplicate is not (its bytes differ). The default policy refuses such a training set;
`test_overlap="exclude"` drops those images' pairs, and "allow" keeps them; both list the
overlaps in the training record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import RsmEvalError
from .pairs import TrainingManifest, TrainingSet, load_pairs, read_captions

TEST_OVERLAP_POLICIES = ("refuse", "exclude", "allow")


@dataclass(frozen=True)
class EvalSplit:
    """An evaluated split that must not share images with the training set."""

    name: str
    captions: str
    split: str = "test"


def evaluated_images(tests: Iterable[EvalSplit]) -> dict[str, dict[str, str]]:
    """Per evaluated split name: image sha256 -> image file name."""
    out: dict[str, dict[str, str]] = {}
    for t in tests:
        table, _ = read_captions(t.captions, f"finetune.tests.{t.name}")
        names: dict[str, str] = {}
        for r in table.to_pylist():
            if r["split"] == t.split:
                names.setdefault(r["image_sha256"], r["image_key"])
        if not names:
            raise RsmEvalError(
                f"finetune.tests.{t.name}: split {t.split!r} has no rows in {t.captions}"
            )
        out[t.name] = names
    return out


def _named(shas: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    if isinstance(shas, Mapping):
        return {str(k): str(v) for k, v in shas.items()}
    return {str(s): str(s)[:12] for s in shas}


def _overlap_error(overlaps: list[dict[str, str]], show: int) -> RsmEvalError:
    per_dataset = Counter(o["dataset"] for o in overlaps)
    listed = "; ".join(
        f"{o['train_image']} = {o['dataset']} test image {o['test_image']}" for o in overlaps[:show]
    )
    more = f" (+{len(overlaps) - show} more)" if len(overlaps) > show else ""
    counts = ", ".join(f"{n} of {d}" for d, n in sorted(per_dataset.items()))
    return RsmEvalError(
        f"finetune: the training set contains {len(overlaps)} image(s) of evaluated test "
        f"splits ({counts}), identical by content: {listed}{more}. Training on test images "
        "inflates their scores; exclude them (test_overlap: exclude) or allow them "
        "explicitly (test_overlap: allow)"
    )


def check_no_test_overlap(
    train_image_sha256s: Mapping[str, str] | Iterable[str],
    test_image_sha256s: Mapping[str, Mapping[str, str] | Iterable[str]],
    allow: bool = False,
    *,
    show: int = 5,
) -> list[dict[str, str]]:
    """Images (by content) that are both in the training set and in an evaluated test split.

    Each argument is a set of image sha256s, or a mapping sha256 -> file name (then messages
    and the result name files); `test_image_sha256s` maps a dataset name to its test images.
    Overlaps are an error naming the first `show` of them, unless `allow`; the list is returned
    either way (sorted by dataset, then sha256) so that a report can say what was allowed.
    """
    train = _named(train_image_sha256s)
    overlaps: list[dict[str, str]] = []
    for dataset in sorted(test_image_sha256s):
        test = _named(test_image_sha256s[dataset])
        for sha in sorted(set(train) & set(test)):
            overlaps.append(
                {
                    "dataset": dataset,
                    "image_sha256": sha,
                    "train_image": train[sha],
                    "test_image": test[sha],
                }
            )
    if overlaps and not allow:
        raise _overlap_error(overlaps, show)
    return overlaps


def _exclude(ts: TrainingSet, overlaps: list[dict[str, str]]) -> None:
    """Drop the pairs of the overlapping images from `ts` and count them."""
    bad = {o["image_sha256"] for o in overlaps}
    before = len(ts.pairs)
    ts.pairs = [p for p in ts.pairs if p.image_sha256 not in bad]
    ts.dropped["test_overlap_pairs"] = before - len(ts.pairs)
    ts.dropped["test_overlap_images"] = len(bad)
    if not ts.pairs:
        raise RsmEvalError(
            "finetune: the training set is empty after excluding the images of "
            "evaluated test splits"
        )


def select(
    sources: Sequence[TrainingManifest],
    tests: Sequence[EvalSplit] = (),
    test_overlap: str = "refuse",
    *,
    verify_images: bool = True,
) -> TrainingSet:
    """The training set after the test-overlap policy (refuse, exclude or allow)."""
    if test_overlap not in TEST_OVERLAP_POLICIES:
        raise RsmEvalError(
            f"finetune.test_overlap: expected one of {list(TEST_OVERLAP_POLICIES)}, "
            f"got {test_overlap!r}"
        )
    ts = load_pairs(sources, verify_images=verify_images)
    ts.test_overlap = test_overlap
    if tests:
        overlaps = check_no_test_overlap(
            ts.image_names(), evaluated_images(tests), allow=test_overlap != "refuse"
        )
        ts.overlaps = overlaps
        if overlaps and test_overlap == "exclude":
            _exclude(ts, overlaps)
    return ts
