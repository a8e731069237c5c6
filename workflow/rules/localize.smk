# Semantic localization (optional config section `localization`): per model and AIR-SLT-style
# set, a similarity map per caption from windowed crops (embedded once, through the feature
# store) and the Rsu / Ras / Rda / Rmi metrics, with heat-map figures for the report.
rule localize:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        data=lambda wc: input_path(PLAN.localization_paths(wc.dataset)),
    output:
        metrics=paths.LOCALIZATION_METRICS,
        figures=directory(paths.LOCALIZATION_FIGURES),
    log:
        "results/logs/localize/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    threads: PLAN.localization_threads() or MODEL_THREADS
    resources:
        gpu=1,
    params:
        model=lambda wc: PLAN.model_json(wc.model),
        model_address=model_address,
        dataset=lambda wc: PLAN.localization_spec(wc.dataset).to_json(),
        data_address=lambda wc: [
            plan.source_address(p) for p in PLAN.localization_paths(wc.dataset)
        ],
        cache_dir=CFG.cache_dir,
        device=CFG.embed.device,
        batch_size=CFG.embed.batch_size,
        bootstrap=PLAN.bootstrap_args,
        code=CODE["localize"],
    shell:
        "python -m rsm_eval localize --model {params.model:q} --dataset {params.dataset:q}"
        " --out {output.metrics:q} --figures {output.figures:q}"
        " --cache-dir {params.cache_dir:q} --device {params.device}"
        " --batch-size {params.batch_size} --threads {threads}"
        " --code {params.code} {params.bootstrap} 2> {log:q}"


# The demo's generated scene (config localization.demo).
if CFG.localization and CFG.localization.demo:
    LOC_DEMO = CFG.localization.demo

    rule demo_scene:
        output:
            annotations=f"{LOC_DEMO.out}/annotations/anno.json",
            images=directory(f"{LOC_DEMO.out}/imgs"),
        log:
            "results/logs/demo_scene.log",
        conda:
            "../../envs/data.yaml"
        params:
            out=lambda wc, output: os.path.dirname(os.path.dirname(output.annotations)),
            seed=LOC_DEMO.seed,
            width=LOC_DEMO.width,
            height=LOC_DEMO.height,
        shell:
            "python -m rsm_eval demo-scene --out {params.out:q} --seed {params.seed}"
            " --width {params.width} --height {params.height} 2> {log:q}"
