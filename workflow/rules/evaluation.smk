rule evaluate:
    """Clean and PGD-N robust accuracy (true label, random start) of one checkpoint on the test split."""
    input:
        data=lambda wc: data_file(wc.dataset),
        checkpoint="results/checkpoints/{dataset}/{arch}/{name}.pt",
        library=library("evaluate"),
    output:
        "results/evaluations/{dataset}/{arch}/{name}.json",
    params:
        attack=lambda wc: eval_params(wc.dataset, analysis_of(wc.name)),
        seed=config["seed"],
    log:
        "logs/evaluate/{dataset}/{arch}/{name}.log",
    threads: job_threads()
    resources:
        gpu=job_gpus(),
        # evaluations keep no resume state: a retry after a time-out gets a longer limit
        runtime=lambda wc, attempt: resources_of(wc.dataset, "evaluate", "runtime", 60) * attempt,
        mem_mb=lambda wc: resources_of(wc.dataset, "evaluate", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/evaluate.py"
