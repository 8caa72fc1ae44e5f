# Training resume state lives in results/.state, outside the outputs: Snakemake deletes the outputs of a
# failed job, and a resubmitted job continues from the last finished epoch (and a group from its last cell).


rule pretrain:
    """Train a fresh net on the whole training set, conventionally or adversarially."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        library=training_library("pretrain"),
        # a net with published weights is imported instead (rule import_pretrained): this rule cannot make it
        published=lambda wc: conf.not_trained_marker(config, wc.dataset, wc.arch, wc.pretraining),
    output:
        model=layout.pattern("pretrained"),
        # the epoch-0 weights: Fig. 7's rewind source
        initial=layout.pattern("initial"),
    params:
        recipe=lambda wc: conf.recipe_params(config, wc.dataset),
        width=lambda wc: conf.width(config, wc.dataset),
        state=lambda wc: layout.pretrain_state(setting(wc)),
    log:
        log_of("pretrain"),
    benchmark:
        benchmark_of("pretrain")
    threads: resources_of("pretrain", "threads", conf.job_threads(config))  # DataLoader workers: all GPUs' ranks
    resources:
        # gpu > 1 (e.g. ImageNet): DDP with SyncBatchNorm inside the one job (advlayers.jobs.pretrain)
        gpu=lambda wc: conf.resources(config, wc.dataset, "pretrain", "gpu", conf.job_gpus(config)),
        runtime=runtime_of("pretrain"),
        mem_mb=resources_of("pretrain", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/pretrain.py"


rule import_pretrained:
    """Published weights (config `datasets.<d>.pretrained`) written as the pretrained net's checkpoint, source and
    sha256 recorded: replaces `pretrain` for that net (its normalisation is checked against the dataset's)."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        library=library("import_pretrained"),
        weights=lambda wc: conf.weights_input(config, wc.dataset, wc.arch, wc.pretraining),
    output:
        model=layout.pattern("pretrained"),
        initial=layout.pattern("initial"),
    params:
        source=lambda wc: conf.published_weights(config, wc.dataset, wc.arch, wc.pretraining),
        width=lambda wc: conf.width(config, wc.dataset),
    log:
        log_of("import_pretrained"),
    benchmark:
        benchmark_of("import_pretrained")
    resources:
        runtime=30,
        mem_mb=8000,
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/import_pretrained.py"


rule retrain:
    """Re-initialise each cell's layers (a fresh draw) and retrain only them, in the opposite mode; one
    checkpoint per cell of the group (one cell per job unless config `grouping` groups them)."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        pretrained=rules.pretrain.output.model,
        # written while the DAG is built when the group folder lacks a cell's checkpoint (advlayers.grid.rebuild)
        rebuild=lambda wc: rebuild.group_rebuild_marker(config, setting(wc), wc.group),
        library=training_library("retrain"),
    output:
        directory(layout.pattern("group")),
    params:
        cells=config_error(lambda wc: plan.group_cells(config, setting(wc), wc.group)),
        recipe=lambda wc: conf.recipe_params(config, wc.dataset, retrain=True),
        width=lambda wc: conf.width(config, wc.dataset),
    log:
        log_of("retrain"),
    benchmark:
        benchmark_of("retrain")
    threads: resources_of("retrain", "threads", conf.job_threads(config))
    resources:
        gpu=conf.job_gpus(config),
        runtime=runtime_of("retrain"),
        mem_mb=resources_of("retrain", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/retrain.py"
