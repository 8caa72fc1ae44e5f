# Training resume state lives in results/.state, outside the outputs: Snakemake deletes the outputs of a
# failed job, and a resubmitted job continues from the last finished epoch (and a batch from its last cell).


rule pretrain:
    """Train a fresh net on the whole training set, conventionally or adversarially."""
    input:
        data=lambda wc: grid.data_path(wc.dataset),
        library=library("pretrain"),
    output:
        model="results/checkpoints/{dataset}/{arch}/seed{seed}/pretrain_{pretraining}.pt",
        # the epoch-0 weights: Fig. 7's rewind source
        initial="results/checkpoints/{dataset}/{arch}/seed{seed}/init_{pretraining}.pt",
    params:
        recipe=lambda wc: grid.recipe_params(config, wc.dataset),
        width=lambda wc: grid.width(config, wc.dataset),
        state=lambda wc: f"{state_dir(wc)}/pretrain_{wc.pretraining}.pt",
    log:
        "logs/pretrain/{dataset}/{arch}/seed{seed}/{pretraining}.log",
    benchmark:
        "results/benchmarks/pretrain/{dataset}/{arch}/seed{seed}/{pretraining}.tsv"
    threads: grid.job_threads(config)
    resources:
        # gpu > 1 (e.g. ImageNet): DDP with SyncBatchNorm inside the one job (workflow/scripts/pretrain.py)
        gpu=lambda wc: grid.resources(config, wc.dataset, "pretrain", "gpu", grid.job_gpus(config)),
        runtime=resources_of("pretrain", "runtime", 60),
        mem_mb=resources_of("pretrain", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/pretrain.py"


rule retrain:
    """Re-initialise each cell's layers (a fresh draw) and retrain only them, in the opposite mode; one
    checkpoint per cell of the batch (one cell per job unless config `batching` groups them)."""
    input:
        data=lambda wc: grid.data_path(wc.dataset),
        pretrained=rules.pretrain.output.model,
        library=library("retrain"),
    output:
        directory("results/checkpoints/{dataset}/{arch}/seed{seed}/retrain_{pretraining}_{batch}"),
    params:
        cells=config_error(lambda wc: BATCHES[setting(wc)][wc.batch]),
        recipe=lambda wc: grid.recipe_params(config, wc.dataset, retrain=True),
        mode=lambda wc: grid.opposite(wc.pretraining),
        width=lambda wc: grid.width(config, wc.dataset),
        state=state_dir,
    log:
        "logs/retrain/{dataset}/{arch}/seed{seed}/{pretraining}_{batch}.log",
    benchmark:
        "results/benchmarks/retrain/{dataset}/{arch}/seed{seed}/{pretraining}_{batch}.tsv"
    threads: grid.job_threads(config)
    resources:
        gpu=grid.job_gpus(config),
        runtime=resources_of("retrain", "runtime", 60),
        mem_mb=resources_of("retrain", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/retrain.py"
