"""The seed's evaluation loop as its own process (what a user of RET3_RetrieveTest.py runs):

    python benchmarks/seed_loop.py MODEL_CONFIG.json ANNOTATIONS.json IMAGES_DIR BATCH WORKERS

Prints one JSON line: the seven recalls and the seconds of each phase. bench_eval times the
whole process from outside, interpreter start-up and imports included, as it times Snakemake.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str]) -> int:
    import bench_eval
    from common import Benchmark
    from rsm_eval.config import Model

    arch, annotations, images, batch, workers = argv
    data = Benchmark(Path(annotations).parent, Path(annotations), Path(images), 0, 0, 0)
    model = Model(name="bench", arch=arch, random=0)
    metrics, parts = bench_eval.baseline(model, data, int(batch), int(workers))
    print(json.dumps({"metrics": metrics, "parts": parts}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
