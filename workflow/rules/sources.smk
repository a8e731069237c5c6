# Download or extract every source given as a URL or an archive, verified by sha256 (from
# config, or locked in the sources lock file on first use), trying each mirror in turn.
# Plain local paths are read in place. Progress goes to the job log and to the terminal.


rule fetch_file:
    input:
        fetch_inputs,
    output:
        "results/sources/{source}",
    log:
        "results/logs/fetch/{source}.log",
    wildcard_constraints:
        source=fetch_constraint(is_dir=False),
    conda:
        "../../envs/data.yaml"
    params:
        spec=fetch_spec,
        lock=CFG.raw["sources_lock"],
        refresh="--refresh-lock" if CFG.raw["refresh_lock"] else "",
    shell:
        "python -m rsm_eval fetch --source {params.spec:q} --dest {output:q}"
        " --lock {params.lock:q} {params.refresh} 2>&1 | tee {log:q} >&2"


rule fetch_dir:
    input:
        fetch_inputs,
    output:
        directory("results/sources/{source}"),
    log:
        "results/logs/fetch/{source}.log",
    wildcard_constraints:
        source=fetch_constraint(is_dir=True),
    conda:
        "../../envs/data.yaml"
    params:
        spec=fetch_spec,
        lock=CFG.raw["sources_lock"],
        refresh="--refresh-lock" if CFG.raw["refresh_lock"] else "",
    shell:
        "python -m rsm_eval fetch --source {params.spec:q} --dest {output:q}"
        " --lock {params.lock:q} {params.refresh} 2>&1 | tee {log:q} >&2"
