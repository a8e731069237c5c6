# Fine-tuning with open_clip's own trainer on caption manifests (RSM-CLIP's recipe). The
# trained weights are keyed by everything that changes them (training rows by content,
# hyper-parameters, seed, base model, code version): the same recipe twice trains once.


rule finetune:
    input:
        unpack(finetune_inputs),
    output:
        model=paths.FINETUNE_WEIGHTS,
        record=paths.FINETUNE_RECORD,
    log:
        "results/logs/finetune/{name}.log",
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    params:
        spec=lambda wc: PLAN.finetune_spec(wc.name).to_json(),
        cache_dir=CFG.cache_dir,
        device=CFG.embed.device,
        code=CODE["finetune"],
    shell:
        "python -m rsm_eval finetune --spec {params.spec:q} --out {output.model:q}"
        " --record {output.record:q} --cache-dir {params.cache_dir:q}"
        " --device {params.device} --threads {threads} 2> {log:q}"
