# RSM-Eval: fetch -> manifests -> features (per model, cached by content) -> metrics -> report.
#
#   sources        download / extract / verify inputs   (workflow/rules/sources.smk)
#   demo           the generated offline benchmark      (workflow/rules/demo.smk)
#   manifests      annotations -> Parquet, validated    (workflow/rules/manifests.smk)
#   finetune       open_clip_train on caption manifests (workflow/rules/finetune.smk)
#   embed          features of the evaluated split      (workflow/rules/embed.smk)
#   evaluate       recall@k by the published protocol  (workflow/rules/evaluate.smk)
#   leakage        duplicates across train/test splits  (workflow/rules/leakage.smk)
#   localize       semantic localization on AIR-SLT     (workflow/rules/localize.smk)
#   scenes         scene classification: zero-shot, probes (workflow/rules/scenes.smk)
#   report         CSV, Markdown, HTML, provenance      (workflow/rules/report.smk)
#
# All logic is in the Python package workflow/rsm_eval; each rule is one call into it.


# `--configfile other.yaml` replaces config.yaml instead of being merged into it, so a
# demo or test config never inherits the real datasets; `--config key=value` still
# overrides single keys of whichever file is used.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/manifests.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/leakage.smk"
include: "workflow/rules/localize.smk"
include: "workflow/rules/scenes.smk"
include: "workflow/rules/report.smk"


# Downloads run where Snakemake runs (cluster compute nodes often have no internet).
localrules:
    fetch_file,
    fetch_dir,


rule all:
    default_target: True
    input:
        PLAN.report_files,
