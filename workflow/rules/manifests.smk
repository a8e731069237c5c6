# Annotations (Karpathy JSON or caption CSV) -> Parquet manifests + validation summary.


rule manifest:
    input:
        annotations=lambda wc: input_path(CFG.datasets[wc.dataset].annotations),
        images=lambda wc: input_path(CFG.datasets[wc.dataset].images),
    output:
        captions=paths.CAPTIONS,
        images=paths.IMAGES,
        summary=paths.SUMMARY,
    log:
        "results/logs/manifest/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    params:
        dataset=lambda wc: PLAN.dataset_json(wc.dataset),
        annotations_address=lambda wc: plan.source_address(
            CFG.datasets[wc.dataset].annotations
        ),
        images_address=lambda wc: plan.source_address(CFG.datasets[wc.dataset].images),
        code=CODE["manifest"],
    shell:
        "python -m rsm_eval manifest --dataset {params.dataset:q}"
        " --captions {output.captions:q} --images {output.images:q}"
        " --summary {output.summary:q} --code {params.code} 2> {log:q}"
