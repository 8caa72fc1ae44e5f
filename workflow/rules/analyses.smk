# Paper §5-6 analyses, each a chain of rules with its own table and figure (targets fig5..fig8).
# They start from the cut-off experiment's pretrained nets: results/checkpoints/{dataset}/{arch}/pretrain_*.pt.



# --------------------------------------------------------------------------- Fig. 5: per-layer cut-off


rule retrain_layers:
    """Adversarially retrain the first k layers (conv + BN) of the conventionally pretrained net (Fig. 5)."""
    input:
        data=lambda wc: data_file(wc.dataset),
        pretrained="results/checkpoints/{dataset}/{arch}/pretrain_{pretraining}.pt",
        library=library("retrain_layers"),
    output:
        "results/checkpoints/{dataset}/{arch}/layers_{pretraining}_{direction}{cutoff}.pt",
    wildcard_constraints:
        cutoff=r"\d+",
    params:
        granularity="layers",
        recipe=lambda wc: analysis_recipe("layer_cutoff", wc.dataset),
        mode=lambda wc: opposite(wc.pretraining),
        seed=config["seed"],
        state="results/.state/{dataset}/{arch}/layers_{pretraining}_{direction}{cutoff}.pt",
    log:
        "logs/retrain_layers/{dataset}/{arch}/{pretraining}_{direction}{cutoff}.log",
    threads: job_threads()
    resources:
        gpu=job_gpus(),
        runtime=lambda wc: resources_of(wc.dataset, "retrain", "runtime", 60),
        mem_mb=lambda wc: resources_of(wc.dataset, "retrain", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/retrain.py"


rule table_layer_cutoff:
    input:
        evaluations=layer_cutoff_evaluations,
        library=library("analysis_table"),
    output:
        report("results/tables/layer_cutoff.parquet", caption="../report/table.rst", category="Tables"),
    params:
        kind="layer_cutoff",
    log:
        "logs/table/layer_cutoff.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_table.py"


rule figure_layer_cutoff:
    input:
        table="results/tables/layer_cutoff.parquet",
        library=library("analysis_figure"),
    output:
        png=report("results/figures/layer_cutoff.png", caption="../report/layer_cutoff.rst", category="Per-layer cut-off (Fig. 5)"),
        pdf="results/figures/layer_cutoff.pdf",
    params:
        kind="layer_cutoff",
        cfg=lambda wc: analysis("layer_cutoff"),
        recipe=lambda wc: analysis_recipe("layer_cutoff", analysis("layer_cutoff")["dataset"]),
        attack=lambda wc: eval_params(analysis("layer_cutoff")["dataset"], "layer_cutoff"),
    log:
        "logs/figure/layer_cutoff.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_figure.py"


# --------------------------------------------------------------------------- Fig. 6: module combinations


rule retrain_subset:
    """Re-initialise and adversarially retrain one subset of modules (bitmask m0..m5) of the conventional net."""
    input:
        data=lambda wc: data_file(wc.dataset),
        pretrained="results/checkpoints/{dataset}/{arch}/pretrain_{pretraining}.pt",
        library=library("retrain_layers"),
    output:
        "results/checkpoints/{dataset}/{arch}/subset_{pretraining}_{mask}.pt",
    wildcard_constraints:
        mask="[01]{6}",
    params:
        granularity="subset",
        recipe=lambda wc: analysis_recipe("combinations", wc.dataset),
        mode=lambda wc: opposite(wc.pretraining),
        seed=config["seed"],
        state="results/.state/{dataset}/{arch}/subset_{pretraining}_{mask}.pt",
    log:
        "logs/retrain_subset/{dataset}/{arch}/{pretraining}_{mask}.log",
    threads: job_threads()
    resources:
        gpu=job_gpus(),
        runtime=lambda wc: resources_of(wc.dataset, "retrain", "runtime", 60),
        mem_mb=lambda wc: resources_of(wc.dataset, "retrain", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/retrain.py"


rule table_combinations:
    input:
        evaluations=combination_evaluations,
        library=library("analysis_table"),
    output:
        report("results/tables/combinations.parquet", caption="../report/table.rst", category="Tables"),
    params:
        kind="combinations",
    log:
        "logs/table/combinations.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_table.py"


rule figure_combinations:
    input:
        table="results/tables/combinations.parquet",
        library=library("analysis_figure"),
    output:
        png=report("results/figures/combinations.png", caption="../report/combinations.rst", category="Module combinations (Fig. 6)"),
        pdf="results/figures/combinations.pdf",
    params:
        kind="combinations",
        cfg=lambda wc: analysis("combinations"),
        recipe=lambda wc: analysis_recipe("combinations", analysis("combinations")["dataset"]),
        attack=lambda wc: eval_params(analysis("combinations")["dataset"], "combinations"),
    log:
        "logs/figure/combinations.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_figure.py"


# --------------------------------------------------------------------------- Fig. 7: layer re-initialisation


rule reinit:
    """Re-initialise (epoch-0 values) or re-randomise (fresh draw) each layer alone; no retraining; evaluate."""
    input:
        data=lambda wc: data_file(wc.dataset),
        pretrained="results/checkpoints/{dataset}/{arch}/pretrain_{pretraining}.pt",
        initial="results/checkpoints/{dataset}/{arch}/init_{pretraining}.pt",
        library=library("reinit"),
    output:
        "results/reinit/{dataset}/{arch}/{pretraining}.parquet",
    params:
        bn_policy=lambda wc: analysis("reinit")["bn_policy"],
        attack=lambda wc: eval_params(wc.dataset, "reinit"),
        seed=config["seed"],
    log:
        "logs/reinit/{dataset}/{arch}/{pretraining}.log",
    threads: job_threads()
    resources:
        gpu=job_gpus(),
        # evaluations keep no resume state: a retry after a time-out gets a longer limit
        runtime=lambda wc, attempt: resources_of(wc.dataset, "evaluate", "runtime", 60) * attempt,
        mem_mb=lambda wc: resources_of(wc.dataset, "evaluate", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/reinit.py"


rule table_reinit:
    input:
        parts=reinit_results,
        library=library("analysis_table"),
    output:
        report("results/tables/reinit.parquet", caption="../report/table.rst", category="Tables"),
    params:
        kind="reinit",
    log:
        "logs/table/reinit.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_table.py"


rule figure_reinit:
    input:
        table="results/tables/reinit.parquet",
        library=library("analysis_figure"),
    output:
        png=report("results/figures/reinit.png", caption="../report/reinit.rst", category="Layer re-initialisation (Fig. 7)"),
        pdf="results/figures/reinit.pdf",
    params:
        kind="reinit",
        cfg=lambda wc: analysis("reinit"),
        attack=lambda wc: eval_params(analysis("reinit")["datasets"][0], "reinit"),
    log:
        "logs/figure/reinit.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_figure.py"


# --------------------------------------------------------------------------- Fig. 8: feature distributions


rule sample_features:
    """Activation vectors after m1..m4 at random positions, clean and PGD-adversarial (cached artifact)."""
    input:
        data=lambda wc: data_file(wc.dataset),
        pretrained="results/checkpoints/{dataset}/{arch}/pretrain_{pretraining}.pt",
        library=library("sample_features"),
    output:
        "results/features/{dataset}/{arch}/{pretraining}.npz",
    params:
        features=lambda wc: feature_params(),
        attack=lambda wc: eval_params(wc.dataset),
        seed=config["seed"],
    log:
        "logs/sample_features/{dataset}/{arch}/{pretraining}.log",
    threads: job_threads()
    resources:
        gpu=job_gpus(),
        # evaluations keep no resume state: a retry after a time-out gets a longer limit
        runtime=lambda wc, attempt: resources_of(wc.dataset, "evaluate", "runtime", 60) * attempt,
        mem_mb=lambda wc: resources_of(wc.dataset, "evaluate", "mem_mb", 4000),
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/sample_features.py"


rule embed_features:
    """2-D embedding (t-SNE / UMAP / TriMap) of one net's clean + adversarial vectors, per module."""
    input:
        vectors="results/features/{dataset}/{arch}/{pretraining}.npz",
        library=library("embed_features"),
    output:
        "results/features/{dataset}/{arch}/{pretraining}_{method}.parquet",
    wildcard_constraints:
        method="tsne|umap|trimap",
    params:
        embedding=lambda wc: analysis("features").get("embedding", {}),
        seed=config["seed"],
    threads: 2
    resources:
        runtime=240,
        mem_mb=16000,
    log:
        "logs/embed_features/{dataset}/{arch}/{pretraining}_{method}.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/embed_features.py"


rule feature_divergence:
    """Beyond the paper: MMD two-sample test and a held-out detector AUROC, clean vs adversarial, per module."""
    input:
        vectors="results/features/{dataset}/{arch}/{pretraining}.npz",
        library=library("feature_divergence"),
    output:
        "results/features/{dataset}/{arch}/{pretraining}_divergence.parquet",
    params:
        divergence=lambda wc: analysis("features").get("divergence", {}),
        seed=config["seed"],
    resources:
        runtime=120,
        mem_mb=16000,
    log:
        "logs/feature_divergence/{dataset}/{arch}/{pretraining}.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/feature_divergence.py"


rule table_feature_divergence:
    input:
        parts=lambda wc: [f"{feature_base()}/{p}_divergence.parquet" for p in PRETRAININGS],
        library=library("analysis_table"),
    output:
        report("results/tables/feature_divergence.parquet", caption="../report/table.rst", category="Tables"),
    params:
        kind="feature_divergence",
    log:
        "logs/table/feature_divergence.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_table.py"


rule figure_features:
    input:
        parts=lambda wc: [f"{feature_base()}/{p}_{wc.method}.parquet" for p in PRETRAININGS],
        library=library("analysis_figure"),
    output:
        png=report("results/figures/features_{method}.png", caption="../report/features.rst", category="Feature distributions (Fig. 8)",
                   labels={"method": "{method}"}),
        pdf="results/figures/features_{method}.pdf",
    wildcard_constraints:
        method="tsne|umap|trimap",
    params:
        kind="features",
        cfg=lambda wc: analysis("features"),
        attack=lambda wc: eval_params(analysis("features")["dataset"]),
    log:
        "logs/figure/features_{method}.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_figure.py"


rule figure_feature_divergence:
    input:
        table="results/tables/feature_divergence.parquet",
        library=library("analysis_figure"),
    output:
        png=report("results/figures/feature_divergence.png", caption="../report/feature_divergence.rst",
                   category="Feature distributions (Fig. 8)", labels={"method": "MMD / detector"}),
        pdf="results/figures/feature_divergence.pdf",
    params:
        kind="feature_divergence",
        cfg=lambda wc: analysis("features"),
        attack=lambda wc: eval_params(analysis("features")["dataset"]),
    log:
        "logs/figure/feature_divergence.log",
    conda:
        "../../envs/advlayers.yaml"
    script:
        "../scripts/analysis_figure.py"
