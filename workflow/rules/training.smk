# Training resume state lives in results/.state, outside the outputs: Snakemake deletes the outputs of a
# failed job, and a resubmitted job continues from the last finished epoch.


rule pretrain:
    """Train a fresh net on the whole training set, conventionally or adversarially."""
    input:
        data=lambda wc: data_file(wc.dataset),
        library=library("pretrain"),
    output:
        model="results/checkpoints/{dataset}/{arch}/pretrain_{pretraining}.pt",
        # the epoch-0 weights, for layer re-initialisation (Fig. 7)
        initial="results/checkpoints/{dataset}/{arch}/init_{pretraining}.pt",
    params:
        recipe=lambda wc: recipe_params(wc.dataset),
        seed=config["seed"],
        state="results/.state/{dataset}/{arch}/pretrain_{pretraining}.pt",
    log:
        "logs/pretrain/{dataset}/{arch}/{pretraining}.log",
    threads: job_threads()
    resources:
        # gpus > 1 (e.g. ImageNet): DDP with SyncBatchNorm inside the one job (workflow/scripts/pretrain.py)
        gpu=lambda wc: resources_of(wc.dataset, "pretrain", "gpu", job_gpus()),
        runtime=lambda wc: resources_of(wc.dataset, "pretrain", "runtime", 60),
        mem_mb=lambda wc: resources_of(wc.dataset, "pretrain", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/pretrain.py"


rule retrain:
    """Re-initialise the modules before/after the cut-off and retrain only them, in the opposite mode."""
    input:
        data=lambda wc: data_file(wc.dataset),
        pretrained="results/checkpoints/{dataset}/{arch}/pretrain_{pretraining}.pt",
        library=library("retrain"),
    output:
        "results/checkpoints/{dataset}/{arch}/retrain_{pretraining}_{direction}{cutoff}.pt",
    params:
        recipe=lambda wc: recipe_params(wc.dataset, retrain=True),
        mode=lambda wc: opposite(wc.pretraining),
        seed=config["seed"],
        state="results/.state/{dataset}/{arch}/retrain_{pretraining}_{direction}{cutoff}.pt",
    log:
        "logs/retrain/{dataset}/{arch}/{pretraining}_{direction}{cutoff}.log",
    threads: job_threads()
    resources:
        gpu=job_gpus(),
        runtime=lambda wc: resources_of(wc.dataset, "retrain", "runtime", 60),
        mem_mb=lambda wc: resources_of(wc.dataset, "retrain", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/retrain.py"
