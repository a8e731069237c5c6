# The bundled offline demo: a deterministic generator makes a small remote-sensing-like
# benchmark in the real formats (Karpathy JSON with .tif and .jpg images, RSMITD-style CSV).
DEMO = CFG.demo
DEMO_OUT = DEMO.out


rule demo_benchmark:
    output:
        annotations=f"{DEMO_OUT}/dataset_demo.json",
        images=directory(f"{DEMO_OUT}/images"),
        csv=f"{DEMO_OUT}/RSMITD.csv",
        csv_images=directory(f"{DEMO_OUT}/rsmitd_images"),
    log:
        "results/logs/demo_benchmark.log",
    conda:
        "../../envs/data.yaml"
    params:
        out=lambda wc, output: os.path.dirname(output.annotations),
        seed=DEMO.seed,
        n_train=DEMO.n_train,
        n_val=DEMO.n_val,
        n_test=DEMO.n_test,
        n_csv_images=DEMO.n_csv_images,
    shell:
        "python -m rsm_eval demo --out {params.out:q} --seed {params.seed}"
        " --n-train {params.n_train} --n-val {params.n_val} --n-test {params.n_test}"
        " --n-csv-images {params.n_csv_images}"
        " 2> {log:q}"


# The demo's class-folder scene benchmark: the test images above (same bytes) in class
# folders named like the real datasets' (aAirport ... lStorageTanks), plus fresh images.
rule demo_scenes:
    input:
        annotations=f"{DEMO_OUT}/dataset_demo.json",
        images=f"{DEMO_OUT}/images",
    output:
        directory(f"{DEMO_OUT}/scenes"),
    log:
        "results/logs/demo_scenes.log",
    conda:
        "../../envs/data.yaml"
    params:
        seed=DEMO.seed,
    shell:
        "python -m rsm_eval demo-scenes --karpathy {input.annotations:q}"
        " --images {input.images:q} --out {output:q} --seed {params.seed} 2> {log:q}"
