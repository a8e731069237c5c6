# Annotations (Karpathy JSON or caption CSV) -> Parquet manifests + validation summary.


rule manifest:
    input:
        annotations=lambda wc: source(CFG.datasets[wc.dataset].annotations),
        images=lambda wc: source(CFG.datasets[wc.dataset].images),
    output:
        captions="results/manifests/{dataset}/captions.parquet",
        images="results/manifests/{dataset}/images.parquet",
        summary="results/manifests/{dataset}/summary.json",
    log:
        "results/logs/manifest/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    params:
        dataset=lambda wc: dataset_json(wc.dataset),
        annotations_address=lambda wc: source_address(
            CFG.datasets[wc.dataset].annotations
        ),
        images_address=lambda wc: source_address(CFG.datasets[wc.dataset].images),
        code=CODE["manifest"],
    shell:
        "python -m rsm_eval manifest --dataset {params.dataset:q}"
        " --captions {output.captions:q} --images {output.images:q}"
        " --summary {output.summary:q} --code {params.code} 2> {log:q}"
