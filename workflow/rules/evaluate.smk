# Retrieval metrics by the published protocol, from cached features.


rule evaluate:
    input:
        captions=paths.CAPTIONS,
        images=paths.IMAGE_FEATURES,
        texts=paths.TEXT_FEATURES,
    output:
        metrics=paths.METRICS,
        ranks=paths.RANKS,
    log:
        "results/logs/evaluate/{model}/{dataset}/{variant}.log",
    conda:
        "../../envs/data.yaml"
    params:
        split=lambda wc: CFG.datasets[wc.dataset].split,
        code=CODE["evaluate"],
        bootstrap=PLAN.bootstrap_args,
        exclude="",
    shell:
        "python -m rsm_eval evaluate --captions {input.captions:q}"
        " --image-features {input.images:q} --text-features {input.texts:q}"
        " --model {wildcards.model:q} --dataset {wildcards.dataset:q}"
        " --split {params.split:q} --variant {wildcards.variant:q}"
        " --out-json {output.metrics:q} --out-ranks {output.ranks:q}"
        " --code {params.code} {params.bootstrap} {params.exclude} 2> {log:q}"


rule compare_models:
    input:
        metrics=PLAN.metrics_files,
        ranks=PLAN.ranks_files,
    output:
        paths.PAIRED,
    log:
        "results/logs/compare_models.log",
    conda:
        "../../envs/data.yaml"
    params:
        bootstrap=PLAN.bootstrap_args,
        code=CODE["statistics"],
    shell:
        "python -m rsm_eval compare --metrics {input.metrics:q} --out {output:q}"
        " {params.bootstrap} 2> {log:q}"


rule classify:
    input:
        captions=paths.CAPTIONS,
        images=paths.IMAGE_FEATURES.replace("{variant}", "remoteclip"),
    output:
        paths.CLASSIFICATION,
    log:
        "results/logs/classify/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    params:
        model=lambda wc: PLAN.model_json(wc.model),
        split=lambda wc: CFG.datasets[wc.dataset].split,
        labels=lambda wc: CFG.datasets[wc.dataset].image_labels,
        templates=list(CFG.classification.templates),
        cache_dir=CFG.cache_dir,
        device=CFG.embed.device,
        code=CODE["classify"],
    shell:
        "python -m rsm_eval classify --model {params.model:q} --dataset {wildcards.dataset:q}"
        " --captions {input.captions:q} --image-features {input.images:q}"
        " --split {params.split:q} --labels {params.labels} --templates {params.templates:q}"
        " --cache-dir {params.cache_dir:q} --device {params.device} --out {output:q}"
        " --threads {threads} 2> {log:q}"
