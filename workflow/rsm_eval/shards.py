"""Which rows one shard of a split computes, when a big split runs as N jobs.

A shard is named `<i>-of-<n>` (1-based, as Snakemake's scattergather names them). The rows
are cut in whole *units* (a batch of images, a window of captions): each shard gets a
contiguous run of units, so every batch a shard forms is exactly a batch the unsharded job
would have formed, and the features are equal bit for bit (batch composition changes the
floating-point summation order of a trimmed text batch, for example). The shards are as even
as whole units allow; when there are fewer units than shards, some get none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from .errors import RsmEvalError

T = TypeVar("T")


def parse(name: str) -> tuple[int, int]:
    """`"2-of-4"` -> (2, 4); an error naming the text otherwise."""
    match = re.fullmatch(r"(\d+)-of-(\d+)", name)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise RsmEvalError(f"shard: {name!r} is not <i>-of-<n> with 1 <= i <= n")
    return int(match.group(1)), int(match.group(2))


def names(n: int) -> list[str]:
    return [f"{i}-of-{n}" for i in range(1, n + 1)]


def bounds(total: int, shard: tuple[int, int], unit: int = 1) -> tuple[int, int]:
    """[start, stop) of shard (i, n) over `total` rows cut in units of `unit` rows."""
    i, n = shard
    if unit < 1:
        raise ValueError("unit must be >= 1")
    units = -(-total // unit)
    return min(total, (i - 1) * units // n * unit), min(total, i * units // n * unit)


def take(rows: Sequence[T], shard: tuple[int, int] | None, unit: int = 1) -> list[T]:
    """The rows of `shard` (all of them when `shard` is None)."""
    if shard is None:
        return list(rows)
    start, stop = bounds(len(rows), shard, unit)
    return list(rows[start:stop])
