rule evaluate:
    """Clean and robust accuracy (true label, random start) of a pretrained net, of every cell of a retraining
    group, or (with grouping) of several of them at once (advlayers.grid.plan.evaluation_units), with per-sample
    outcomes."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        nets=config_error(evaluated_nets),
        library=library("evaluate"),
    output:
        records=layout.pattern("evaluation"),
        outcomes=layout.pattern("outcomes"),
    wildcard_constraints:
        unit=layout.PGD_UNITS,
    params:
        checkpoints=config_error(evaluated_checkpoints),
        eval_settings=lambda wc: conf.eval_settings(config, wc.dataset),
    log:
        log_of("evaluate"),
    benchmark:
        benchmark_of("evaluate")
    threads: conf.job_threads(config)
    resources:
        gpu=conf.job_gpus(config),
        runtime=retry_runtime("evaluate"),
        mem_mb=resources_of("evaluate", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluate_autoattack:
    """AutoAttack (beside the figures' PGD) of the pretrained net and the key cells of a setting: the
    robustness_gap table flags nets whose PGD accuracy overstates their robustness (gradient masking)."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        nets=config_error(evaluated_nets),
        library=library("evaluate"),
    output:
        records=layout.pattern("evaluation"),
        outcomes=layout.pattern("outcomes"),
    wildcard_constraints:
        unit=layout.AUTOATTACK_UNITS,
    params:
        checkpoints=config_error(evaluated_checkpoints),
        eval_settings=lambda wc: conf.autoattack_eval_settings(config, wc.dataset),
    log:
        log_of("evaluate_autoattack"),
    benchmark:
        benchmark_of("evaluate_autoattack")
    threads: conf.job_threads(config)
    resources:
        gpu=conf.job_gpus(config),
        runtime=retry_runtime("evaluate_autoattack"),
        mem_mb=resources_of("evaluate_autoattack", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/evaluate.py"


# A sharded unit's file is the merge of its shards' (both rules could make it: the merge wins).
ruleorder: merge_shards > evaluate_autoattack


rule merge_shards:
    """The records and per-sample outcomes of an AutoAttack evaluation split into shards of test images
    (`datasets.<d>.autoattack.shards`): merged exactly, after checking the shards are complete, disjoint and of
    the same nets and settings (advlayers.jobs.merge_shards)."""
    input:
        shards=config_error(lambda wc: sharding.shard_files(config, setting(wc), wc.unit)),
        outcomes=config_error(
            lambda wc: [layout.outcomes_of(p) for p in sharding.shard_files(config, setting(wc), wc.unit)]
        ),
        library=library("merge_shards"),
    output:
        records=layout.pattern("evaluation"),
        outcomes=layout.pattern("outcomes"),
    wildcard_constraints:
        dataset=sharding.sharded_datasets_pattern(config),
        unit=layout.AUTOATTACK_UNIT,
    log:
        log_of("merge_shards"),
    benchmark:
        benchmark_of("merge_shards")
    localrule: True
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/merge_shards.py"
