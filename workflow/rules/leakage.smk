# Test-set leakage audit: decoded-pixel and perceptual hashes of every image, duplicates
# between training sources and evaluated test splits (and between test splits), and the
# metrics recomputed without the leaked test images.


rule image_hashes:
    input:
        images="results/manifests/{dataset}/images.parquet",
        root=lambda wc: source(CFG.datasets[wc.dataset].images),
    output:
        "results/leakage/hashes/{dataset}.parquet",
    log:
        "results/logs/image_hashes/{dataset}.log",
    wildcard_constraints:
        dataset=sharded_constraint(False),
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
        images="results/manifests/{dataset}/images.parquet",
        root=lambda wc: source(CFG.datasets[wc.dataset].images),
    output:
        "results/leakage/hashes/{dataset}/{shard}.parquet",
    log:
        "results/logs/image_hashes/{dataset}/{shard}.log",
    wildcard_constraints:
        dataset=sharded_constraint(True),
        shard=r"\d+-of-\d+",
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
        lambda wc: expand(
            "results/leakage/hashes/{{dataset}}/{shard}.parquet",
            shard=shard_names(wc.dataset),
        ),
    output:
        "results/leakage/hashes/{dataset}.parquet",
    log:
        "results/logs/image_hashes/{dataset}.log",
    wildcard_constraints:
        dataset=sharded_constraint(True),
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
        "results/leakage/audit.json",
    log:
        "results/logs/leakage_audit.log",
    conda:
        "../../envs/torch.yaml"
    threads: MODEL_THREADS
    params:
        spec=leakage_spec(),
        max_hamming=LEAKAGE.get("max_hamming", 6),
        confirm=leakage_confirm_args(),
        code=CODE["leakage"],
    shell:
        "python -m rsm_eval leakage --spec {params.spec:q}"
        " --max-hamming {params.max_hamming} {params.confirm} --out {output:q}"
        " --threads {threads} 2> {log:q}"


rule evaluate_clean:
    input:
        captions="results/manifests/{dataset}/captions.parquet",
        images="results/features/{model}/{dataset}/{variant}/images.parquet",
        texts="results/features/{model}/{dataset}/{variant}/texts.parquet",
        audit="results/leakage/audit.json",
    output:
        metrics="results/metrics/{model}/{dataset}/{variant}.clean.json",
        ranks="results/metrics/{model}/{dataset}/{variant}.clean.ranks.parquet",
    log:
        "results/logs/evaluate_clean/{model}/{dataset}/{variant}.log",
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
        " --exclude-leaked {input.audit:q} --code {params.code} {params.bootstrap}"
        " 2> {log:q}"
