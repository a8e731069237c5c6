# Download or extract every source given as a URL or an archive, verified by sha256 (from
# config, or locked in the sources lock file on first use), trying each mirror in turn.
# Plain local paths are read in place. Progress goes to the job log and to the terminal.


rule fetch_file:
    input:
        fetch_inputs,
    output:
        paths.FETCHED,
    log:
        "results/logs/fetch/{fetched}.log",
    wildcard_constraints:
        fetched=PLAN.fetch_constraint(is_dir=False),
    conda:
        "../../envs/data.yaml"
    params:
        spec=lambda wc: PLAN.fetch_spec(wc.fetched).to_json(),
        lock=CFG.sources_lock,
        refresh="--refresh-lock" if CFG.refresh_lock else "",
    shell:
        "python -m rsm_eval fetch --spec {params.spec:q} --dest {output:q}"
        " --lock {params.lock:q} {params.refresh} 2>&1 | tee {log:q} >&2"


use rule fetch_file as fetch_dir with:
    output:
        directory(paths.FETCHED),
    wildcard_constraints:
        fetched=PLAN.fetch_constraint(is_dir=True),
