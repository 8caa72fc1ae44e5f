rule prepare_data:
    """Load, verify and write one dataset artifact (tensors, or a manifest of an image folder)."""
    input:
        library("prepare_data"),
    output:
        "results/data/{dataset}.{ext}",
    params:
        root=lambda wc: grid.dataset_config(config, wc.dataset).get("root"),
    log:
        "logs/prepare_data/{dataset}.{ext}.log",
    wildcard_constraints:
        ext="pt|json",
    resources:
        runtime=60,
        mem_mb=8000,
    conda:
        "../envs/advlayers.yaml"
    script:
        "../scripts/prepare_data.py"
