# Paper §5-6 analyses that are not retrained cells (Fig. 5 and 6 cells are `retrain` jobs shared with Fig. 2):
# layer-wise re-initialisation (Fig. 7) and feature distributions (Fig. 8), each from the pretrained nets.


rule reinit:
    """Each layer alone rewound to its epoch-0 values or redrawn, under each BatchNorm policy; evaluated,
    no retraining (Fig. 7)."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        pretrained=rules.pretrain.output.model,
        initial=rules.pretrain.output.initial,
        library=library("reinit"),
    output:
        layout.pattern("reinit"),
    params:
        bn_policies=lambda wc: conf.with_defaults(conf.analysis(config, "reinit"), "analyses", "reinit")["bn_policies"],
        eval_settings=lambda wc: conf.eval_settings(config, wc.dataset, "reinit"),
    log:
        log_of("reinit"),
    benchmark:
        benchmark_of("reinit")
    threads: conf.job_threads(config)
    resources:
        gpu=conf.job_gpus(config),
        runtime=retry_runtime("reinit"),
        mem_mb=resources_of("reinit", "mem_mb", 4000),
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/reinit.py"


rule sample_features:
    """Activation vectors after m1..m4 at random positions, clean and adversarial (a cached artifact)."""
    input:
        data=lambda wc: layout.data_path(wc.dataset),
        pretrained=rules.pretrain.output.model,
        library=library("sample_features"),
    output:
        layout.pattern("activations"),
    params:
        features=lambda wc: {
            k: v
            for k, v in sorted(conf.analysis(config, "features").items())
            if k not in ("methods", "embedding", "divergence", "eval")
        },
        eval_settings=lambda wc: conf.eval_settings(config, wc.dataset, "features"),
    log:
        log_of("sample_features"),
    benchmark:
        benchmark_of("sample_features")
    threads: conf.job_threads(config)
    resources:
        gpu=conf.job_gpus(config),
        runtime=retry_runtime("sample_features"),
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
        layout.pattern("embedding"),
    params:
        embedding=lambda wc: conf.analysis(config, "features").get("embedding", {}),
    log:
        log_of("embed_features"),
    benchmark:
        benchmark_of("embed_features")
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
        layout.pattern("divergence"),
    params:
        divergence=lambda wc: conf.analysis(config, "features").get("divergence", {}),
    log:
        log_of("feature_divergence"),
    benchmark:
        benchmark_of("feature_divergence")
    threads: conf.job_threads(config)
    resources:
        runtime=120,
        mem_mb=16000,
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/feature_divergence.py"
