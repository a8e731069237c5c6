"""Run RSM-Eval's performance benchmarks and write a Markdown report.

    python benchmarks/run.py                 # everything: ~15 min on an idle 2-core CPU
                                             # (the full-size cold evaluation is ~10 min)
    python benchmarks/run.py --quick         # scaled down (~1-3 min), a smoke test
    python benchmarks/run.py --only eval     # one benchmark: embed, eval, score, incremental
    python benchmarks/run.py --only scenes   # PatternNet-shaped scene classification (~1 h)

Each target is measured against its own reference in the same run on the same machine (the
bare forward pass, the seed's evaluation loop, the matrix-multiply floor, Snakemake's start-up),
never against numbers from elsewhere. The report goes to
benchmarks/results/<date>-<host>.md and, for a full default run, benchmarks/results/latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from common import Report, fmt  # noqa: E402

BENCHES = ("embed", "eval", "score", "incremental", "scenes")
# PatternNet-scale scene classification (30,400 images) takes most of an hour on 2 cores: run it
# with --only scenes.
DEFAULT_BENCHES = ("embed", "eval", "score", "incremental")
RSICD_TEST = (1093, 3331)  # images, distinct captions; 5 captions per image


def _markdown(report: Report, info: dict, args: argparse.Namespace, seconds: float) -> str:
    def esc(x) -> str:
        return fmt(x).replace("|", "\\|")

    mode = "quick" if args.quick else "default"
    lines = [
        f"# RSM-Eval benchmarks: {info['date'][:10]} on {info['host']}",
        "",
        f"`python benchmarks/run.py{' --quick' if args.quick else ''}"
        f"{' --only ' + ','.join(args.only) if args.only else ''}` ({mode} scale), "
        f"{seconds / 60:.1f} min wall time. Every ratio compares two measurements taken in this "
        "run on this machine.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {esc(v)} |" for k, v in info.items()],
        "",
        "## Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for v in report.verdicts:
        met = "n/a" if v.met is None else ("**yes**" if v.met else "**no**")
        why = f" ({v.why})" if v.why else ""
        lines.append(f"| {v.target} | {esc(v.goal)} | {esc(v.measured)}{esc(why)} | {met} |")
    lines += ["", "## Figures", "", "| bench | figure | value | note |", "|---|---|---|---|"]
    for r in report.rows:
        value = f"{esc(r.value)} {r.unit}".strip()
        lines.append(f"| {r.bench} | {esc(r.what)} | {value} | {esc(r.note)} |")
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    return "\n".join(lines) + "\n"


RSM_ITD = (210_000, 476_000)  # images, captions


def _extrapolate(report: Report, figures: dict) -> None:
    """What an RSM-ITD-sized gallery would cost on this machine, from this run's rates (the
    cold evaluation's when it ran ViT-B-32, else the embedding benchmark's)."""
    n_img, n_txt = RSM_ITD
    ev, e, sc = figures.get("eval"), figures.get("embed"), figures.get("score")
    rates = ev if ev and ev["layers"] == 12 else e
    if rates:
        img_h = n_img / rates["image_rate"] / 3600
        full_h = n_txt / rates["text_full"] / 3600
        trim_h = n_txt / rates["text_trimmed"] / 3600
        report.notes.append(
            f"Extrapolated from this run ({rates['source']}, {rates['label']}): embedding "
            f"{n_img:,} images takes {img_h:.1f} h ({rates['image_rate']:.1f} img/s); {n_txt:,} "
            f"distinct captions {trim_h:.1f} h sorted and trimmed "
            f"({rates['text_trimmed']:.1f}/s) instead of {full_h:.1f} h at 77 tokens "
            f"({rates['text_full']:.1f}/s), for RSICD-like caption lengths."
        )
    if sc:
        minutes = n_img * n_txt / sc["pairs_per_s"] / 60
        floor = n_img * n_txt / sc["floor_pairs_per_s"] / 60
        report.notes.append(
            f"Extrapolated from this run: exact recall@k over {n_img:,} x {n_txt:,} takes "
            f"{minutes:.0f} min (matrix-multiply floor {floor:.0f} min), memory bounded by the "
            "block size (plus the features themselves: 1.3 GiB at 512-d float32)."
        )


def _print_table(report: Report) -> None:
    print("\n" + "=" * 100)
    for v in report.verdicts:
        met = "n/a" if v.met is None else ("MET" if v.met else "NOT MET")
        print(f"{met:8} {v.target:58} {v.goal:>14}  {v.measured}")
    print("=" * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke test")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=None,
        help=f"comma-separated subset of {','.join(BENCHES)}",
    )
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="transformer layers per tower of the cold-evaluation model (default 12 = "
        "ViT-B-32, quick 1)",
    )
    parser.add_argument(
        "--eval-scale",
        type=int,
        default=None,
        help="the cold evaluation uses RSICD's test split divided by this (default 1, quick 8; "
        "1 = full size)",
    )
    parser.add_argument(
        "--embed-layers",
        type=int,
        default=None,
        help="layers of the embedding-rate model (default 12 = ViT-B-32, quick 1)",
    )
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data")
    args = parser.parse_args(argv)
    only = args.only or list(DEFAULT_BENCHES)
    unknown = set(only) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHES}")
    layers = args.layers or (1 if args.quick else 12)
    eval_scale = args.eval_scale or (8 if args.quick else 1)
    embed_layers = args.embed_layers or (1 if args.quick else 12)

    t_start = time.monotonic()
    info = common.machine()
    info["load average at start"] = common.load_average()
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="rsm-eval-bench-"))
    from rsm_eval import cas

    os.environ[cas.MEMO_ENV] = str(tmp / "hash-memo.sqlite")  # never the user's memo
    cas._MEMO = None
    try:
        data = None
        if {"embed", "eval"} & set(only):
            n_img = max(64, round(RSICD_TEST[0] / eval_scale))
            n_distinct = round(n_img * RSICD_TEST[1] / RSICD_TEST[0])
            print(f"\ngenerating an RSICD-shaped test split ({n_img} images) ...", flush=True)
            data = common.make_benchmark(tmp / "rsicd", n_images=n_img, n_distinct=n_distinct)
        workers = 1  # loader workers for [2] when [1] does not choose them
        figures: dict = {}
        if "embed" in only:
            import bench_embed

            print("\n[1] embedding stage vs bare forward", flush=True)
            images = sorted(data.images.iterdir())[:64]
            doc = json.loads(data.annotations.read_text())
            distinct = list(
                dict.fromkeys(s["raw"] for im in doc["images"] for s in im["sentences"])
            )
            figures["embed"] = bench_embed.run(
                report,
                images=images,
                texts=distinct[:64],
                layers=embed_layers,
                batch_size=32,
                workers_options=(0, 1, 2),
                tmp=tmp / "embed",
                rounds=1 if args.quick else 3,
            )
            workers = figures["embed"]["workers"]
        if "eval" in only:
            import bench_eval

            print("\n[2] cold evaluation vs the seed's loop", flush=True)
            figures["eval"] = bench_eval.run(
                report,
                data=data,
                layers=layers,
                batch_size=64,
                workers=workers,
                tmp=tmp / "eval",
                scale=eval_scale,
            )
        if "score" in only:
            import bench_score

            print("\n[3] scoring: time and memory", flush=True)
            n_img, n_txt = (4000, 20000) if args.quick else (20000, 100000)
            dense = (500, 2500) if args.quick else (2000, 10000)
            figures["score"] = bench_score.run(
                report,
                n_images=n_img,
                n_captions=n_txt,
                dense_images=dense[0],
                dense_captions=dense[1],
            )
        if "incremental" in only:
            import bench_incremental

            print("\n[4] incremental work", flush=True)
            bench_incremental.run(report, tmp / "incremental", quick=args.quick)
        if "scenes" in only:
            import bench_scenes

            print("\n[5] scene classification through the workflow", flush=True)
            (tmp / "scenes").mkdir()
            figures["scenes"] = bench_scenes.run(report, tmp / "scenes", quick=args.quick)
    finally:
        if args.keep:
            print(f"temporary data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.quick:
        report.notes.insert(
            0,
            "Quick scale is a smoke test of the benchmarks themselves: its 1-layer model makes "
            "fixed costs (decoding, tokenizing, start-up) weigh several times more than with "
            "a real model, so its verdicts do not judge the targets; the default run does.",
        )
    _extrapolate(report, figures)
    seconds = time.monotonic() - t_start
    info["load average at end"] = common.load_average()
    _print_table(report)
    full = not args.quick and args.only is None
    suffix = "" if full else ("-quick" if args.quick else "-partial")
    args.results.mkdir(parents=True, exist_ok=True)
    text = _markdown(report, info, args, seconds)
    out = args.results / f"{date.today().isoformat()}-{info['host']}{suffix}.md"
    out.write_text(text, encoding="utf-8")
    written = [out]
    if full:
        (args.results / "latest.md").write_text(text, encoding="utf-8")
        written.append(args.results / "latest.md")
    print(f"{seconds / 60:.1f} min; wrote {', '.join(str(p) for p in written)}")
    return 0  # a missed target is a finding, reported above, not a failure of the run


if __name__ == "__main__":
    sys.exit(main())
