# One report over every evaluated model x dataset, with provenance, paper-layout tables
# (tables/) and figures (figures/).


rule report:
    input:
        metrics=METRICS_FILES,
        summaries=SUMMARY_FILES,
        paired="results/statistics/paired.json",
        audit=["results/leakage/audit.json"] if LEAKAGE else [],
        clean=CLEAN_METRICS_FILES,
        classification=CLASSIFICATION_FILES,
        scenes=SCENE_FILES,
        finetunes=FINETUNE_RECORDS,
        localization=LOCALIZATION_FILES,
    output:
        csv=report(
            "results/report/retrieval.csv",
            caption="../report/retrieval.rst",
            category="Retrieval",
        ),
        md="results/report/report.md",
        html=report(
            "results/report/report.html",
            caption="../report/report.rst",
            category="Retrieval",
        ),
        provenance="results/report/provenance.json",
        tables=report(
            directory("results/report/tables"),
            patterns=["{name}.tex"],
            caption="../report/tables.rst",
            category="Paper tables",
        ),
        figures=report(
            directory("results/report/figures"),
            patterns=["{name}.svg"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        "results/logs/report.log",
    conda:
        "../../envs/data.yaml"
    params:
        root=workflow.basedir,
        published=published_keys(),
        tolerance=CFG.raw["published_tolerance"],
        leakage=lambda wc, input: (
            f"--audit {shlex.quote(input.audit[0])} --image-roots {shlex.quote(image_roots())}"
            if LEAKAGE
            else ""
        ),
        code=CODE["report"],
        localization_code=CODE["localize_report"],
        scene_code=CODE["scene_report"],
    shell:
        "python -m rsm_eval report --metrics {input.metrics:q}"
        " --summaries {input.summaries:q} --out-dir results/report"
        " --workflow-root {params.root:q} --published-keys {params.published:q}"
        " --tolerance {params.tolerance} --paired {input.paired:q}"
        " --clean-metrics {input.clean:q} --classification {input.classification:q}"
        " --finetunes {input.finetunes:q} --localization {input.localization:q}"
        " --scenes {input.scenes:q}"
        " {params.leakage} 2> {log:q}"
