# Semantic localization (optional config section `localization`): per model and AIR-SLT-style
# set, a similarity map per caption from windowed crops (embedded once, through the feature
# store) and the Rsu / Ras / Rda / Rmi metrics, with heat-map figures for the report.
rule localize:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        data=lambda wc: localization_inputs(wc.dataset),
    output:
        metrics="results/localization/{model}/{dataset}/metrics.json",
        figures=directory("results/localization/{model}/{dataset}/figures"),
    log:
        "results/logs/localize/{model}/{dataset}.log",
    conda:
        "../../envs/torch.yaml"
    threads: LOC_RAW.get("threads") or MODEL_THREADS
    resources:
        gpu=1,
    params:
        model=lambda wc: model_json(wc.model),
        model_address=lambda wc: model_address(wc.model),
        dataset=lambda wc: localization_dataset_json(wc.dataset),
        data_address=lambda wc: [
            source_address(p) for p in localization_paths(wc.dataset)
        ],
        cache_dir=CFG.cache_dir,
        device=CFG.embed["device"],
        batch_size=CFG.embed["batch_size"],
        bootstrap=BOOTSTRAP_ARGS,
        code=CODE["localize"],
    shell:
        "python -m rsm_eval localize --model {params.model:q} --dataset {params.dataset:q}"
        " --out {output.metrics:q} --figures {output.figures:q}"
        " --cache-dir {params.cache_dir:q} --device {params.device}"
        " --batch-size {params.batch_size} --threads {threads}"
        " --code {params.code} {params.bootstrap} 2> {log:q}"


# The demo's generated scene (config localization.demo).
if LOC_RAW.get("demo"):
    LOC_DEMO = LOC_RAW["demo"]

    rule demo_scene:
        output:
            annotations=f"{LOC_DEMO['out']}/annotations/anno.json",
            images=directory(f"{LOC_DEMO['out']}/imgs"),
        log:
            "results/logs/demo_scene.log",
        conda:
            "../../envs/data.yaml"
        params:
            out=lambda wc, output: os.path.dirname(os.path.dirname(output.annotations)),
            seed=LOC_DEMO["seed"],
            width=LOC_DEMO["width"],
            height=LOC_DEMO["height"],
        shell:
            "python -m rsm_eval demo-scene --out {params.out:q} --seed {params.seed}"
            " --width {params.width} --height {params.height} 2> {log:q}"
