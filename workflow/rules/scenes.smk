# Scene classification: class folders / label CSVs -> validated manifest -> image features
# (content-keyed store, shared with retrieval) -> zero-shot per template set, linear probes.


rule scene_manifest:
    input:
        images=lambda wc: input_path(CFG.datasets[wc.dataset].images),
        annotations=lambda wc: (
            [input_path(CFG.datasets[wc.dataset].annotations)]
            if CFG.datasets[wc.dataset].annotations
            else []
        ),
    output:
        manifest=paths.SCENE_MANIFEST,
        summary=paths.SCENE_SUMMARY,
    log:
        "results/logs/scene_manifest/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    threads: 2
    params:
        dataset=lambda wc: PLAN.dataset_json(wc.dataset),
        images_address=lambda wc: plan.source_address(CFG.datasets[wc.dataset].images),
        annotations_address=lambda wc: (
            plan.source_address(CFG.datasets[wc.dataset].annotations)
            if CFG.datasets[wc.dataset].annotations
            else ""
        ),
        code=CODE["scene_manifest"],
    shell:
        "python -m rsm_eval scene-manifest --dataset {params.dataset:q}"
        " --out {output.manifest:q} --summary {output.summary:q} --code {params.code}"
        " 2> {log:q}"


rule scene_features:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        manifest=paths.SCENE_MANIFEST,
    output:
        paths.SCENE_FEATURES,
    log:
        "results/logs/scene_features/{dataset}/{model}.log",
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    params:
        model=lambda wc: PLAN.model_json(wc.model),
        model_address=model_address,
        images_root=lambda wc: CFG.datasets[wc.dataset].images,
        cache_dir=CFG.cache_dir,
        batch_size=CFG.embed.batch_size,
        workers=CFG.embed.workers or 0,
        device=CFG.embed.device,
        code=CODE["scene_eval"],
    shell:
        "python -m rsm_eval scene-features --model {params.model:q}"
        " --manifest {input.manifest:q} --images-root {params.images_root:q}"
        " --out {output:q} --cache-dir {params.cache_dir:q}"
        " --batch-size {params.batch_size} --workers {params.workers}"
        " --device {params.device} 2> {log:q}"


rule zeroshot:
    input:
        manifest=paths.SCENE_MANIFEST,
        features=paths.SCENE_FEATURES,
    output:
        paths.ZEROSHOT,
    log:
        "results/logs/zeroshot/{dataset}/{model}/{templates}.log",
    wildcard_constraints:
        templates=plan.NAME,
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        model=lambda wc: PLAN.model_json(wc.model),
        dataset=lambda wc: PLAN.dataset_json(wc.dataset),
        cache_dir=CFG.cache_dir,
        device=CFG.embed.device,
        bootstrap=PLAN.bootstrap_args,
        code=CODE["scene_eval"],
    shell:
        "python -m rsm_eval zeroshot --model {params.model:q} --dataset {params.dataset:q}"
        " --manifest {input.manifest:q} --features {input.features:q}"
        " --templates {wildcards.templates:q} --cache-dir {params.cache_dir:q}"
        " --device {params.device} --code {params.code} {params.bootstrap}"
        " --out {output:q} 2> {log:q}"


rule linear_probe:
    input:
        manifest=paths.SCENE_MANIFEST,
        features=paths.SCENE_FEATURES,
    output:
        paths.PROBE,
    log:
        "results/logs/linear_probe/{dataset}/{model}.log",
    conda:
        "../../envs/data.yaml"
    threads: 2
    params:
        settings=CFG.classification.linear_probe.to_json(),
        split=lambda wc: CFG.datasets[wc.dataset].split,
        code=CODE["probe"],
    shell:
        "python -m rsm_eval probe --model {wildcards.model:q} --dataset {wildcards.dataset:q}"
        " --split {params.split:q} --manifest {input.manifest:q}"
        " --features {input.features:q} --settings {params.settings:q}"
        " --code {params.code} --out {output:q} 2> {log:q}"
