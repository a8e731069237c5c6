"""Target 3: recall@k for 20,000 images x 100,000 captions in bounded memory.

`metrics.remoteclip_retrieval` (ranks and exact tie intervals) on random L2-normalised 512-d
float32 features (5 captions per image), in a child process whose peak resident set (VmHWM,
inputs included; see `peak_rss_mib`) is the memory figure. The floor is the two float32
matrix products the problem needs (images x captions and captions x images), timed alone in
another child with the same block size, so neither run pollutes the other's memory or time.
Identity with the dense computation is checked on a size where the dense matrices fit
(float64 and float32 score matrices, stable descending order), and with a 1 MiB block size.

Run as `python bench_score.py child MODE N_IMAGES N_CAPTIONS` for one child measurement.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIM = 512
BLOCK_BYTES = 256 << 20  # metrics' default
GOAL_TIME = 1.5
GOAL_MEM_GIB = 1.0


def features(n: int, seed: int) -> np.ndarray:
    """Random unit vectors, generated in chunks straight into float32 (no float64 copy)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, 8192):
        x = rng.standard_normal((min(8192, n - s), DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s : s + len(x)] = x
    return out


def problem(n_images: int, n_captions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return features(n_images, 1), features(n_captions, 2), np.arange(n_captions) % n_images


def _status_mib(field: str) -> float:
    """A /proc/self/status memory field (VmRSS: now, VmHWM: peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set of this process image. VmHWM belongs to the address space created
    by exec, whereas Linux carries ru_maxrss across fork+exec, so a child started from a big
    parent would report the parent's size; ru_maxrss is the fallback off Linux."""
    hwm = _status_mib("VmHWM")
    if hwm == hwm:  # not NaN
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, n_images: int, n_captions: int) -> dict:
    sys.path.insert(0, str(HERE.parent / "workflow"))
    from rsm_eval import metrics

    img, txt, owner = problem(n_images, n_captions)
    out: dict = {"inputs_mib": (img.nbytes + txt.nbytes) / 2**20}
    out["rss_before_mib"] = _status_mib("VmRSS")
    t = time.perf_counter()
    if mode == "floor":
        for q, g in ((img, txt), (txt, img)):
            rows = max(1, BLOCK_BYTES // (4 * g.shape[0]))
            buf = np.empty((min(rows, q.shape[0]), g.shape[0]), dtype=np.float32)
            for s in range(0, q.shape[0], rows):
                e = min(q.shape[0], s + rows)
                np.matmul(q[s:e], g.T, out=buf[: e - s])
    elif mode == "retrieval":
        result = metrics.remoteclip_retrieval(img, txt, owner)
        out["metrics"] = result.metrics
        out["tied_queries"] = int(
            np.count_nonzero(result.i2t_rank_low != result.i2t_rank_high)
            + np.count_nonzero(result.t2i_rank_low != result.t2i_rank_high)
        )
    else:
        raise SystemExit(f"unknown mode {mode}")
    out["seconds"] = time.perf_counter() - t
    out["peak_rss_mib"] = peak_rss_mib()  # the whole process, inputs included
    return out


def _run_child(mode: str, n_images: int, n_captions: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", mode]
    proc = subprocess.run(
        [*cmd, str(n_images), str(n_captions)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _dense_ranks(scores: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    """Best-positive rank per query from a dense score matrix: position in a stable
    descending sort (ties: lower gallery index first), minimum over the positives."""
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    for q in range(scores.shape[0]):
        order = np.argsort(-scores[q], kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        ranks[q] = position[positives[q]].min()
    return ranks


def dense_check(n_images: int, n_captions: int) -> dict:
    sys.path.insert(0, str(HERE.parent / "workflow"))
    from rsm_eval import metrics

    img, txt, owner = problem(n_images, n_captions)
    caps_of = [np.flatnonzero(owner == i) for i in range(n_images)]
    blocked = metrics.remoteclip_retrieval(img, txt, owner)
    small_blocks = metrics.remoteclip_retrieval(img, txt, owner, block_bytes=1 << 20)
    out = {}
    for name, dtype in (("float64", np.float64), ("float32", np.float32)):
        s = img.astype(dtype) @ txt.astype(dtype).T
        i2t = _dense_ranks(s, caps_of)
        t2i = _dense_ranks(np.ascontiguousarray(s.T), [np.array([o]) for o in owner])
        out[name] = int(np.count_nonzero(i2t != blocked.i2t_ranks)) + int(
            np.count_nonzero(t2i != blocked.t2i_ranks)
        )
        out[name + " metrics equal"] = metrics.metrics_from_ranks(i2t, t2i) == blocked.metrics
    out["block size independent"] = bool(
        np.array_equal(blocked.i2t_ranks, small_blocks.i2t_ranks)
        and np.array_equal(blocked.t2i_ranks, small_blocks.t2i_ranks)
    )
    return out


def run(report, *, n_images: int, n_captions: int, dense_images: int, dense_captions: int):
    from common import Verdict

    bench = "3 scoring"
    report.add(
        bench,
        "problem",
        f"{n_images:,} images x {n_captions:,} captions, {DIM}-d float32, random unit vectors",
    )
    check = dense_check(dense_images, dense_captions)
    report.add(
        bench,
        f"rank mismatches vs dense ({dense_images:,} x {dense_captions:,})",
        f"float64: {check['float64']}, float32: {check['float32']}",
        "",
        f"block-size independent: {check['block size independent']}",
    )
    # floor, retrieval, floor: the faster floor is the reference (conservative on a machine
    # whose load changes during the run).
    floors = [_run_child("floor", n_images, n_captions)]
    ret = _run_child("retrieval", n_images, n_captions)
    floors.append(_run_child("floor", n_images, n_captions))
    floor = min(floors, key=lambda f: f["seconds"])
    flops = 2 * 2 * n_images * n_captions * DIM
    report.add(
        bench,
        "matmul floor (2 float32 products)",
        floor["seconds"],
        "s",
        f"{flops / floor['seconds'] / 1e9:.0f} GFLOP/s, blocks of {BLOCK_BYTES >> 20} MiB; "
        f"faster of {floors[0]['seconds']:.1f} s (before) and {floors[1]['seconds']:.1f} s (after)",
    )
    report.add(
        bench,
        "remoteclip_retrieval",
        ret["seconds"],
        "s",
        f"ranks and tie intervals; {ret['tied_queries']} queries with a tie",
    )
    ratio = ret["seconds"] / floor["seconds"]
    report.add(bench, "retrieval / floor", ratio)
    peak_gib = ret["peak_rss_mib"] / 1024
    report.add(
        bench,
        "peak RSS of the retrieval process",
        ret["peak_rss_mib"],
        "MiB",
        f"inputs {ret['inputs_mib']:.0f} MiB, RSS before scoring {ret['rss_before_mib']:.0f} MiB",
    )
    identical = check["float64"] == 0 and check["block size independent"]
    report.verdicts.append(
        Verdict(
            "3a scoring peak memory < 1 GiB",
            f"< {GOAL_MEM_GIB:.0f} GiB",
            f"{peak_gib:.2f} GiB ({n_images:,} x {n_captions:,})",
            peak_gib < GOAL_MEM_GIB,
        )
    )
    report.verdicts.append(
        Verdict(
            "3b scoring time <= 1.5x matmul floor",
            f"<= {GOAL_TIME}x",
            f"{ratio:.2f}x ({ret['seconds']:.0f} s vs {floor['seconds']:.0f} s)",
            ratio <= GOAL_TIME,
            "",
        )
    )
    report.verdicts.append(
        Verdict(
            "3c scoring identical to dense",
            "0 rank differences",
            f"{check['float64']} vs float64 dense ({dense_images:,} x {dense_captions:,}); "
            f"{check['float32']} vs float32 dense, whose own rounding reorders near-ties",
            identical,
        )
    )
    return {
        "pairs_per_s": n_images * n_captions / ret["seconds"],
        "floor_pairs_per_s": n_images * n_captions / floor["seconds"],
    }


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        raise SystemExit(__doc__)
