rule evaluate:
    """Clean and robust accuracy (true label, random start) of a pretrained net, of every cell of a batch, or
    (with batching) of several of them at once (grid.evaluation_units), with per-sample outcomes."""
    input:
        data=lambda wc: grid.data_path(wc.dataset),
        nets=config_error(evaluated),
        library=library("evaluate"),
    output:
        records="results/evaluations/{dataset}/{arch}/seed{seed}/{net}.json",
        outcomes="results/evaluations/{dataset}/{arch}/seed{seed}/{net}.outcomes.parquet",
    wildcard_constraints:
        net=r"(pretrain|retrain|nets)_(conventional|adversarial)(_[\w-]+)?",
    params:
        checkpoints=config_error(evaluated_checkpoints),
        attack=lambda wc: grid.eval_params(config, wc.dataset),
    log:
        "logs/evaluate/{dataset}/{arch}/seed{seed}/{net}.log",
    benchmark:
        "results/benchmarks/evaluate/{dataset}/{arch}/seed{seed}/{net}.tsv"
    threads: grid.job_threads(config)
    resources:
        gpu=grid.job_gpus(config),
        # evaluations keep no resume state: a retry after a time-out gets a longer limit
        runtime=lambda wc, attempt: grid.resources(config, wc.dataset, "evaluate", "runtime", 60) * attempt,
        mem_mb=resources_of("evaluate", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate_autoattack:
    """AutoAttack (beside the figures' PGD) of the pretrained net and the key cells of a setting: the
    robustness_gap table flags nets whose PGD accuracy overstates their robustness (gradient masking)."""
    input:
        data=lambda wc: grid.data_path(wc.dataset),
        nets=config_error(autoattack_nets),
        library=library("evaluate"),
    output:
        records="results/evaluations/{dataset}/{arch}/seed{seed}/autoattack_{pretraining}.json",
        outcomes="results/evaluations/{dataset}/{arch}/seed{seed}/autoattack_{pretraining}.outcomes.parquet",
    params:
        checkpoints=config_error(lambda wc: grid.net_checkpoints(config, setting(wc),
                                                                 grid.autoattack_cells(config, setting(wc)))),
        attack=lambda wc: grid.autoattack_params(config, wc.dataset),
    log:
        "logs/evaluate_autoattack/{dataset}/{arch}/seed{seed}/{pretraining}.log",
    benchmark:
        "results/benchmarks/evaluate_autoattack/{dataset}/{arch}/seed{seed}/{pretraining}.tsv"
    threads: grid.job_threads(config)
    resources:
        gpu=grid.job_gpus(config),
        runtime=lambda wc, attempt: grid.resources(config, wc.dataset, "evaluate", "runtime", 60) * attempt,
        mem_mb=resources_of("evaluate", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/evaluate.py"
