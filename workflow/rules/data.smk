rule prepare_data:
    """Load, verify and write one dataset artifact (tensors, or a manifest of an image folder)."""
    input:
        library("prepare_data"),
    output:
        layout.pattern("data"),
    params:
        root=lambda wc: conf.dataset_config(config, wc.dataset).get("root"),
        dataset_config=lambda wc: conf.prepare_params(config, wc.dataset),
    log:
        layout.log_path("prepare_data", "{dataset}.{ext}"),
    benchmark:
        layout.benchmark_path("prepare_data", "{dataset}.{ext}")
    wildcard_constraints:
        ext="pt|json",
    resources:
        runtime=60,
        mem_mb=8000,
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/prepare_data.py"
