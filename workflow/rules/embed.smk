# Features of the evaluated split for one model, computed only for rows that the
# content-keyed feature store (cache_dir) lacks. A dataset with embed.shards N > 1 is
# embedded by N embed_shard jobs (one GPU each) that fill the store, and embed_gather writes
# the same feature tables from it.


rule embed:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        captions=paths.CAPTIONS,
    output:
        images=paths.IMAGE_FEATURES,
        texts=paths.TEXT_FEATURES,
    log:
        "results/logs/embed/{model}/{dataset}/{variant}.log",
    wildcard_constraints:
        dataset=PLAN.sharded_constraint(False),
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    params:
        args=embed_args,
        model_address=model_address,
        device=CFG.embed.device,
        code=CODE["embed"],
    shell:
        "python -m rsm_eval embed {params.args} --captions {input.captions:q}"
        " --out-images {output.images:q} --out-texts {output.texts:q}"
        " --device {params.device} --threads {threads} 2> {log:q}"


rule embed_shard:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        captions=paths.CAPTIONS,
    output:
        paths.FEATURE_SHARD,
    log:
        "results/logs/embed/{model}/{dataset}/{variant}/{shard}.log",
    wildcard_constraints:
        dataset=PLAN.sharded_constraint(True),
        shard=plan.SHARD,
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    params:
        args=embed_args,
        model_address=model_address,
        device=CFG.embed.device,
        code=CODE["embed"],
    shell:
        "python -m rsm_eval embed {params.args} --captions {input.captions:q}"
        " --shard {wildcards.shard} --shard-record {output:q}"
        " --device {params.device} --threads {threads} 2> {log:q}"


# Reads the shards' rows from the store (on the CPU, no GPU: nothing is left to compute
# unless a chunk was damaged since, which is then recomputed here).
rule embed_gather:
    input:
        unpack(lambda wc: model_inputs(wc.model)),
        captions=paths.CAPTIONS,
        shards=lambda wc: PLAN.feature_shards(wc.model, wc.dataset, wc.variant),
    output:
        images=paths.IMAGE_FEATURES,
        texts=paths.TEXT_FEATURES,
    log:
        "results/logs/embed/{model}/{dataset}/{variant}.log",
    wildcard_constraints:
        dataset=PLAN.sharded_constraint(True),
    conda:
        "../../envs/torch.yaml"
    params:
        args=embed_args,
        model_address=model_address,
        code=CODE["embed"],
    shell:
        "python -m rsm_eval embed {params.args} --captions {input.captions:q}"
        " --out-images {output.images:q} --out-texts {output.texts:q}"
        " --device cpu --threads {threads} 2> {log:q}"
