# One report over every evaluated model x dataset, with provenance, paper-layout tables
# (tables/) and figures (figures/).


rule report:
    input:
        metrics=PLAN.metrics_files,
        summaries=PLAN.summary_files,
        paired=paths.PAIRED,
        audit=PLAN.audit_files,
        clean=PLAN.clean_metrics_files,
        classification=PLAN.classification_files,
        scenes=PLAN.scene_files,
        finetunes=PLAN.finetune_records,
        localization=PLAN.localization_files,
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
        published=PLAN.published_keys(),
        tolerance=CFG.published_tolerance,
        leakage=lambda wc, input: (
            f"--audit {shlex.quote(input.audit[0])}"
            f" --image-roots {shlex.quote(json.dumps(PLAN.image_roots(), sort_keys=True))}"
            if input.audit
            else ""
        ),
        code=CODE["report"],
    shell:
        "python -m rsm_eval report --metrics {input.metrics:q}"
        " --summaries {input.summaries:q} --out-dir results/report"
        " --workflow-root {params.root:q} --published-keys {params.published:q}"
        " --tolerance {params.tolerance} --paired {input.paired:q}"
        " --clean-metrics {input.clean:q} --classification {input.classification:q}"
        " --finetunes {input.finetunes:q} --localization {input.localization:q}"
        " --scenes {input.scenes:q}"
        " {params.leakage} 2> {log:q}"
