"""Where every product lives: the path templates of the workflow, in one place.

Rules use them as Snakemake outputs (the braces are wildcards); the plan formats them into
target lists. Everything is under results/ (RESULTS); anything else a rule reads is a file
the user gave.
"""

from __future__ import annotations

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
FETCHED = f"{RESULTS}/sources/{{fetched}}"  # config.SOURCES_DIR

# manifests
CAPTIONS = f"{RESULTS}/manifests/{{dataset}}/captions.parquet"
IMAGES = f"{RESULTS}/manifests/{{dataset}}/images.parquet"
SUMMARY = f"{RESULTS}/manifests/{{dataset}}/summary.json"

# features and retrieval metrics (one model x dataset x variant)
FEATURES = f"{RESULTS}/features/{{model}}/{{dataset}}/{{variant}}"
IMAGE_FEATURES = f"{FEATURES}/images.parquet"
TEXT_FEATURES = f"{FEATURES}/texts.parquet"
FEATURE_SHARD = f"{FEATURES}/shards/{{shard}}.json"
METRICS = f"{RESULTS}/metrics/{{model}}/{{dataset}}/{{variant}}.json"
RANKS = f"{RESULTS}/metrics/{{model}}/{{dataset}}/{{variant}}.ranks.parquet"
CLEAN_METRICS = f"{RESULTS}/metrics/{{model}}/{{dataset}}/{{variant}}.clean.json"
CLEAN_RANKS = f"{RESULTS}/metrics/{{model}}/{{dataset}}/{{variant}}.clean.ranks.parquet"
PAIRED = f"{RESULTS}/statistics/paired.json"
CLASSIFICATION = f"{RESULTS}/classification/{{model}}/{{dataset}}.json"

# leakage audit
HASHES = f"{RESULTS}/leakage/hashes/{{dataset}}.parquet"
HASH_SHARD = f"{RESULTS}/leakage/hashes/{{dataset}}/{{shard}}.parquet"
AUDIT = f"{RESULTS}/leakage/audit.json"

# fine-tuning
FINETUNE_WEIGHTS = f"{RESULTS}/finetune/{{name}}/model.pt"
FINETUNE_RECORD = f"{RESULTS}/finetune/{{name}}/model.json"

# scene classification
SCENE_MANIFEST = f"{RESULTS}/scenes/{{dataset}}/manifest.parquet"
SCENE_SUMMARY = f"{RESULTS}/scenes/{{dataset}}/summary.json"
SCENE_FEATURES = f"{RESULTS}/scenes/{{dataset}}/features/{{model}}.parquet"
ZEROSHOT = f"{RESULTS}/scenes/{{dataset}}/zeroshot/{{model}}/{{templates}}.json"
PROBE = f"{RESULTS}/scenes/{{dataset}}/probe/{{model}}.json"

# semantic localization
LOCALIZATION = f"{RESULTS}/localization/{{model}}/{{dataset}}"
LOCALIZATION_METRICS = f"{LOCALIZATION}/metrics.json"
LOCALIZATION_FIGURES = f"{LOCALIZATION}/figures"

# report
REPORT_DIR = f"{RESULTS}/report"
REPORT_FILES = [
    f"{REPORT_DIR}/retrieval.csv",
    f"{REPORT_DIR}/report.md",
    f"{REPORT_DIR}/report.html",
    f"{REPORT_DIR}/provenance.json",
]


def finetune_weights(name: str) -> str:
    return FINETUNE_WEIGHTS.format(name=name)
