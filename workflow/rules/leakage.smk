# Test-set leakage audit: decoded-pixel and perceptual hashes of every image, duplicates
# between training sources and evaluated test splits (and between test splits), and the
# metrics recomputed without the leaked test images.


rule image_hashes:
    input:
        images=paths.IMAGES,
        root=lambda wc: input_path(CFG.datasets[wc.dataset].images),
    output:
        paths.HASHES,
    log:
        "results/logs/image_hashes/{dataset}.log",
    wildcard_constraints:
        dataset=PLAN.sharded_constraint(False),
    conda:
        "../../envs/data.yaml"
    threads: MODEL_THREADS
    params:
        code=CODE["leakage"],
    shell:
        "python -m rsm_eval image-hashes --images-manifest {input.images:q}"
        " --images-root {input.root:q} --out {output:q} --threads {threads} 2> {log:q}"


# A dataset with embed.shards N > 1 is hashed by N jobs, concatenated in shard order.
rule image_hashes_shard:
    input:
        images=paths.IMAGES,
        root=lambda wc: input_path(CFG.datasets[wc.dataset].images),
    output:
        paths.HASH_SHARD,
    log:
        "results/logs/image_hashes/{dataset}/{shard}.log",
    wildcard_constraints:
        dataset=PLAN.sharded_constraint(True),
        shard=plan.SHARD,
    conda:
        "../../envs/data.yaml"
    threads: MODEL_THREADS
    params:
        code=CODE["leakage"],
    shell:
        "python -m rsm_eval image-hashes --images-manifest {input.images:q}"
        " --images-root {input.root:q} --out {output:q} --threads {threads}"
        " --shard {wildcards.shard} 2> {log:q}"


rule image_hashes_gather:
    input:
        lambda wc: PLAN.hash_shards(wc.dataset),
    output:
        paths.HASHES,
    log:
        "results/logs/image_hashes/{dataset}.log",
    wildcard_constraints:
        dataset=PLAN.sharded_constraint(True),
    conda:
        "../../envs/data.yaml"
    params:
        code=CODE["leakage"],
    shell:
        "python -m rsm_eval gather-hashes --parts {input:q} --out {output:q} 2> {log:q}"


rule leakage_audit:
    input:
        unpack(leakage_inputs),
    output:
        paths.AUDIT,
    log:
        "results/logs/leakage_audit.log",
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    params:
        spec=lambda wc: PLAN.leakage_spec().to_json(),
        cache_dir=CFG.cache_dir,
        device=CFG.embed.device,
        code=CODE["leakage"],
    shell:
        "python -m rsm_eval leakage --spec {params.spec:q} --cache-dir {params.cache_dir:q}"
        " --device {params.device} --out {output:q} --threads {threads} 2> {log:q}"


# The metrics without the test images found in training sources.
use rule evaluate as evaluate_clean with:
    input:
        captions=paths.CAPTIONS,
        images=paths.IMAGE_FEATURES,
        texts=paths.TEXT_FEATURES,
        audit=paths.AUDIT,
    output:
        metrics=paths.CLEAN_METRICS,
        ranks=paths.CLEAN_RANKS,
    log:
        "results/logs/evaluate_clean/{model}/{dataset}/{variant}.log",
    params:
        exclude=lambda wc, input: f"--exclude-leaked {shlex.quote(input.audit)}",
