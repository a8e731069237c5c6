# Features of the evaluated split for one model, computed only for rows that the
# content-keyed feature store (cache_dir) lacks.


rule embed:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        captions="results/manifests/{dataset}/captions.parquet",
    output:
        images="results/features/{model}/{dataset}/{variant}/images.parquet",
        texts="results/features/{model}/{dataset}/{variant}/texts.parquet",
    log:
        "results/logs/embed/{model}/{dataset}/{variant}.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=lambda wc: model_json(wc.model),
        model_address=lambda wc: model_address(wc.model),
        images_root=lambda wc: CFG.datasets[wc.dataset].images,
        split=lambda wc: CFG.datasets[wc.dataset].split,
        cache_dir=CFG.cache_dir,
        batch_size=CFG.embed["batch_size"],
        workers=CFG.embed["workers"],
        device=CFG.embed["device"],
        chunk_rows=CFG.embed["chunk_rows"],
        text_prefix=lambda wc: parse_variant(wc.variant)[0].text_prefix,
        autocast=lambda wc: "--autocast" if parse_variant(wc.variant)[1] else "",
        code=CODE["embed"],
    shell:
        "python -m rsm_eval embed --model {params.model:q} --captions {input.captions:q}"
        " --images-root {params.images_root:q} --split {params.split:q}"
        " --out-images {output.images:q} --out-texts {output.texts:q}"
        " --cache-dir {params.cache_dir:q} --batch-size {params.batch_size}"
        " --workers {params.workers} --device {params.device}"
        " --chunk-rows {params.chunk_rows} --text-prefix={params.text_prefix:q}"
        " {params.autocast} 2> {log:q}"
