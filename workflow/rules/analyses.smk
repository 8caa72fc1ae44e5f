# Paper §5-6 analyses that are not retrained cells (Fig. 5 and 6 cells are `retrain` jobs shared with Fig. 2):
# layer-wise re-initialisation (Fig. 7) and feature distributions (Fig. 8), each from the pretrained nets.


rule reinit:
    """Each layer alone rewound to its epoch-0 values or redrawn, under each BatchNorm policy; evaluated,
    no retraining (Fig. 7)."""
    input:
        data=lambda wc: grid.data_path(wc.dataset),
        pretrained=rules.pretrain.output.model,
        initial=rules.pretrain.output.initial,
        library=library("reinit"),
    output:
        "results/reinit/{dataset}/{arch}/seed{seed}/{pretraining}.parquet",
    params:
        bn_policies=lambda wc: grid.analysis(config, "reinit").get("bn_policies", list(grid.BN_POLICIES)),
        attack=lambda wc: grid.eval_params(config, wc.dataset, "reinit"),
    log:
        "logs/reinit/{dataset}/{arch}/seed{seed}/{pretraining}.log",
    benchmark:
        "results/benchmarks/reinit/{dataset}/{arch}/seed{seed}/{pretraining}.tsv"
    threads: grid.job_threads(config)
    resources:
        gpu=grid.job_gpus(config),
        # evaluations keep no resume state: a retry after a time-out gets a longer limit
        runtime=lambda wc, attempt: grid.resources(config, wc.dataset, "reinit", "runtime", 60) * attempt,
        mem_mb=resources_of("reinit", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/reinit.py"


rule sample_features:
    """Activation vectors after m1..m4 at random positions, clean and adversarial (a cached artifact)."""
    input:
        data=lambda wc: grid.data_path(wc.dataset),
        pretrained=rules.pretrain.output.model,
        library=library("sample_features"),
    output:
        "results/features/{dataset}/{arch}/seed{seed}/{pretraining}.npz",
    params:
        features=lambda wc: {k: v for k, v in sorted(grid.analysis(config, "features").items())
                             if k not in ("methods", "embedding", "divergence", "eval")},
        attack=lambda wc: grid.eval_params(config, wc.dataset, "features"),
    log:
        "logs/sample_features/{dataset}/{arch}/seed{seed}/{pretraining}.log",
    benchmark:
        "results/benchmarks/sample_features/{dataset}/{arch}/seed{seed}/{pretraining}.tsv"
    threads: grid.job_threads(config)
    resources:
        gpu=grid.job_gpus(config),
        runtime=lambda wc, attempt: grid.resources(config, wc.dataset, "sample_features", "runtime", 60) * attempt,
        mem_mb=resources_of("sample_features", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/sample_features.py"


rule embed_features:
    """2-D embedding (t-SNE / UMAP / TriMap) of one net's clean + adversarial vectors, per module."""
    input:
        vectors=rules.sample_features.output[0],
        library=library("embed_features"),
    output:
        "results/features/{dataset}/{arch}/seed{seed}/{pretraining}_{method}.parquet",
    wildcard_constraints:
        method="|".join(grid.EMBED_METHODS),
    params:
        embedding=lambda wc: grid.analysis(config, "features").get("embedding", {}),
    log:
        "logs/embed_features/{dataset}/{arch}/seed{seed}/{pretraining}_{method}.log",
    benchmark:
        "results/benchmarks/embed_features/{dataset}/{arch}/seed{seed}/{pretraining}_{method}.tsv"
    threads: 2
    resources:
        runtime=240,
        mem_mb=16000,
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/embed_features.py"


rule feature_divergence:
    """Beyond the paper: MMD two-sample test (permuting whole images) and a held-out detector AUROC with its
    image-bootstrap interval, clean vs adversarial, per module."""
    input:
        vectors=rules.sample_features.output[0],
        library=library("feature_divergence"),
    output:
        "results/features/{dataset}/{arch}/seed{seed}/{pretraining}_divergence.parquet",
    params:
        divergence=lambda wc: grid.analysis(config, "features").get("divergence", {}),
    log:
        "logs/feature_divergence/{dataset}/{arch}/seed{seed}/{pretraining}.log",
    threads: grid.job_threads(config)
    resources:
        runtime=120,
        mem_mb=16000,
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/feature_divergence.py"
