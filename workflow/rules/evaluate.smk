# Retrieval metrics by the published protocol, from cached features.


rule evaluate:
    input:
        captions="results/manifests/{dataset}/captions.parquet",
        images="results/features/{model}/{dataset}/{variant}/images.parquet",
        texts="results/features/{model}/{dataset}/{variant}/texts.parquet",
    output:
        metrics="results/metrics/{model}/{dataset}/{variant}.json",
        ranks="results/metrics/{model}/{dataset}/{variant}.ranks.parquet",
    log:
        "results/logs/evaluate/{model}/{dataset}/{variant}.log",
    conda:
        "../../envs/data.yaml"
    params:
        split=lambda wc: CFG.datasets[wc.dataset].split,
        code=CODE["evaluate"],
        bootstrap=BOOTSTRAP_ARGS,
    shell:
        "python -m rsm_eval evaluate --captions {input.captions:q}"
        " --image-features {input.images:q} --text-features {input.texts:q}"
        " --model {wildcards.model:q} --dataset {wildcards.dataset:q}"
        " --split {params.split:q} --protocol {wildcards.variant:q}"
        " --out-json {output.metrics:q} --out-ranks {output.ranks:q}"
        " --code {params.code} {params.bootstrap} 2> {log:q}"


rule compare_models:
    input:
        metrics=METRICS_FILES,
        ranks=[f.replace(".json", ".ranks.parquet") for f in METRICS_FILES],
    output:
        "results/statistics/paired.json",
    log:
        "results/logs/compare_models.log",
    conda:
        "../../envs/data.yaml"
    params:
        bootstrap=BOOTSTRAP_ARGS,
        code=CODE["statistics"],
    shell:
        "python -m rsm_eval compare --metrics {input.metrics:q} --out {output:q}"
        " {params.bootstrap} 2> {log:q}"


rule classify:
    input:
        captions="results/manifests/{dataset}/captions.parquet",
        images="results/features/{model}/{dataset}/remoteclip/images.parquet",
    output:
        "results/classification/{model}/{dataset}.json",
    log:
        "results/logs/classify/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    params:
        model=lambda wc: model_json(wc.model),
        split=lambda wc: CFG.datasets[wc.dataset].split,
        labels=lambda wc: CFG.datasets[wc.dataset].image_labels,
        templates=CFG.raw["classification"]["templates"],
        cache_dir=CFG.cache_dir,
        device=CFG.embed["device"],
        code=CODE["classify"],
    shell:
        "python -m rsm_eval classify --model {params.model:q} --dataset {wildcards.dataset:q}"
        " --captions {input.captions:q} --image-features {input.images:q}"
        " --split {params.split:q} --labels {params.labels} --templates {params.templates:q}"
        " --cache-dir {params.cache_dir:q} --device {params.device} --out {output:q}"
        " --threads {threads} 2> {log:q}"
