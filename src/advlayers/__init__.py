"""advlayers: which layers make a network susceptible to adversarial attacks (block-wise retraining).

The package is layered, bottom to top (a module imports only from its own layer or below):

    io, checks, stats, provenance, _torchvision   small helpers every layer uses
    grid        the experiment grid without torch: vocabulary, config, artifact layout, what a config expands to
    core        the protocol's machinery (torch): models, datasets, recipes, attacks, training, evaluation
    analyses    Fig. 7-8 analyses: layer re-initialisation, activation vectors, embeddings, divergence
    jobs        what each workflow rule runs
    report      tables, the claims check, figures (no torch)
    tools       the command line, cost model, verify, preflight, export

The public API is importable from here (`from advlayers import build_model, pretrain, evaluate`); names are
resolved on first use, so `import advlayers` stays free of torch.
"""

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    **dict.fromkeys(("build_model", "split_modules", "layers", "ModularNet", "ModelSpec", "register_arch",
                     "module_names_for_cutoff"), "advlayers.core.models"),
    **dict.fromkeys(("load_dataset", "prepare_dataset", "load_prepared"), "advlayers.core.datasets"),
    **dict.fromkeys(("get_recipe", "Recipe", "PRESETS"), "advlayers.core.recipes"),
    **dict.fromkeys(("pretrain", "retrain", "train"), "advlayers.core.training"),
    **dict.fromkeys(("pgd", "fgsm_rs", "AttackSpec", "robust_correct"), "advlayers.core.attacks"),
    **dict.fromkeys(("AutoAttackSpec", "APGDSpec"), "advlayers.core.autoattack"),
    "APGDEnsembleSpec": "advlayers.core.ensemble",
    "evaluate": "advlayers.core.evaluation",
    **dict.fromkeys(("load_checkpoint", "save_checkpoint"), "advlayers.core.checkpoints"),
    **dict.fromkeys(("reinit_layer", "reinit_grid"), "advlayers.analyses.reinit"),
    "sample_activations": "advlayers.analyses.features",
    "check_claims": "advlayers.report.claims",
}
__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advlayers' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
