# The bundled offline demo: a deterministic generator makes a small remote-sensing-like
# benchmark in the real formats (Karpathy JSON with .tif and .jpg images, RSMITD-style CSV).
DEMO = config.get("demo", {})
DEMO_OUT = DEMO.get("out", "results/demo/data")


rule demo_benchmark:
    output:
        annotations=f"{DEMO_OUT}/dataset_demo.json",
        images=directory(f"{DEMO_OUT}/images"),
        csv=f"{DEMO_OUT}/RSMITD.csv",
        csv_images=directory(f"{DEMO_OUT}/rsmitd_images"),
    params:
        out=DEMO_OUT,
        seed=DEMO.get("seed", 0),
        n_train=DEMO.get("n_train", 300),
        n_val=DEMO.get("n_val", 50),
        n_test=DEMO.get("n_test", 100),
    log:
        "results/logs/demo_benchmark.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "python -m rsm_eval demo --out {params.out:q} --seed {params.seed}"
        " --n-train {params.n_train} --n-val {params.n_val} --n-test {params.n_test}"
        " 2> {log:q}"
