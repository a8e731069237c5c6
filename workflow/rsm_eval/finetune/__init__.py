"""Fine-tuning stage: caption manifests + a base model -> a fine-tuned state dict, by openCLIP.

RSM-CLIP is openCLIP fully fine-tuned on RSM-ITD (then on RET-3). This subpackage reproduces
that recipe with openCLIP's own trainer (`open_clip_train.main`), not a hand-written loop. One
module per step of `finetune` (stage.py):

- `pairs`: select image-caption pairs from `captions` manifests (`TrainingManifest`), in a
  canonical order, and split off the validation images;
- `overlap`: check them against the evaluated test splits (refuse, exclude or allow);
- `params`: the hyper-parameters and RSM-CLIP's presets;
- `trainer` / `launcher`: plan the schedule, write the CSV files open_clip_train reads, run it
  in a subprocess and read its logs;
- `checkpoint`: convert its training checkpoint into a plain state dict that
  `rsm_eval.models.build` loads as `weights:` of the same architecture, and cache it;
- `record`: the fine-tune's content address and training record.

Content address. `finetune_address` is a digest of the selected pairs' contents (image sha256,
caption sha256; never paths), the hyper-parameters (seed included), the base model's address,
this subpackage's code version and the openCLIP / torch / torchvision versions. Equal inputs
give an equal address, so a finished fine-tune can be found again (`cache_dir`) instead of
retrained. The training CSV is written in a canonical order (sorted by content), so the address
fixes what open_clip_train sees, and the validation split is a deterministic function of the
pairs' image hashes and the seed. What does not enter the address: the device, the precision
that `precision: auto` resolves to, the numbers of data-loader workers and CPU threads, paths
and names (a GPU run and a CPU run of one address are the same experiment, not bitwise the
same weights; two CPU runs with equal threads are, and the state dict is written
byte-identically).

Torch and open_clip are imported lazily: addresses are cheap.
"""

from __future__ import annotations

from .launcher import THREADS_ENV, parse_logs, run_open_clip_train
from .overlap import (
    TEST_OVERLAP_POLICIES,
    EvalSplit,
    check_no_test_overlap,
    evaluated_images,
    select,
)
from .pairs import Pair, TrainingManifest, TrainingSet, load_pairs, split_train_val
from .params import PAPER_PRESETS, PRECISIONS, SCHEDULERS, FinetuneParams, paper_params
from .record import STAGE, code, finetune_address, versions
from .stage import finetune

__all__ = [
    "PAPER_PRESETS",
    "PRECISIONS",
    "SCHEDULERS",
    "STAGE",
    "TEST_OVERLAP_POLICIES",
    "THREADS_ENV",
    "EvalSplit",
    "FinetuneParams",
    "Pair",
    "TrainingManifest",
    "TrainingSet",
    "check_no_test_overlap",
    "code",
    "evaluated_images",
    "finetune",
    "finetune_address",
    "load_pairs",
    "paper_params",
    "parse_logs",
    "run_open_clip_train",
    "select",
    "split_train_val",
    "versions",
]
