"""Reading a workflow config, with the schema's defaults (loading and checking it: `grid.validate`).

`config.schema.yaml` beside this module is the one source of the config's keys, types and defaults: Snakemake
validates with it (workflow/rules/common.smk), `validate.load` does the same for the command-line tools, and the
accessors below fall back to the defaults read from it (`default`) when a hand-made config leaves a key out.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from .vocabulary import DIRECTIONS, PRETRAININGS, ConfigError

SCHEMA = Path(__file__).with_name("config.schema.yaml")


# --------------------------------------------------------------------------- the schema and its defaults


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA.read_text())


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = schema()["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


@functools.lru_cache(maxsize=None)
def _defaults(path: tuple[str, ...]) -> dict:
    node = schema()
    for key in path:
        node = _resolve(node)
        node = node.get("properties", {}).get(key) or _resolve(node.get("additionalProperties") or {})
        if "allOf" in node:  # a shared definition and this place's own additions (e.g. a default)
            merged: dict = {}
            for part in node["allOf"]:
                for k, v in _resolve(part).get("properties", {}).items():
                    merged[k] = {**merged.get(k, {}), **v}
            node = {"properties": merged}
    node = _resolve(node)
    return {k: v["default"] for k, v in node.get("properties", {}).items() if "default" in v}


def default(*path: str):
    """The schema's default of a key, e.g. default('seeds'), default('datasets', '*', 'eval', 'n')."""
    *parents, key = path
    found = _defaults(tuple(parents))
    if key not in found:
        raise KeyError(f"config key {'.'.join(path)} has no default in {SCHEMA.name}")
    return copy.deepcopy(found[key])


def with_defaults(section: dict | None, *path: str) -> dict:
    """A config section with the schema's defaults for the keys it leaves out."""
    return {**copy.deepcopy(_defaults(tuple(path))), **(section or {})}


# --------------------------------------------------------------------------- reading a config


def seeds(config: dict) -> list[int]:
    return list(config.get("seeds") or default("seeds"))


def dataset_config(config: dict, dataset: str) -> dict:
    if dataset not in config["datasets"]:
        raise ConfigError(f"dataset {dataset!r} is not configured; configured: {', '.join(config['datasets'])}")
    return config["datasets"][dataset]


def prepare_params(config: dict, dataset: str) -> dict:
    """The dataset keys its prepare_data job depends on (its params: a change reruns it). `decode` and `cache_size`
    only when the decoded-image cache is chosen, so that a `pil` dataset's params stay as they were before."""
    cfg = dataset_config(config, dataset)
    out = {k: cfg.get(k) for k in ("kind", "root", "image_size", "mean", "std")}
    if cfg.get("decode", "pil") != "pil":
        out.update(decode=cfg["decode"], cache_size=cfg.get("cache_size"))
    return out


def analysis(config: dict, name: str) -> dict | None:
    """An analysis's config section, or None when the config does not run it."""
    return (config.get("analyses") or {}).get(name)


def analysis_pretrainings(config: dict, name: str) -> list[str]:
    cfg = analysis(config, name) or {}
    return list(cfg.get("pretrainings") or PRETRAININGS)


def arch_cutoffs(config: dict, arch: str) -> dict[str, list[int]]:
    """An arch's own cut-offs (config `archs.<arch>.cutoffs`): the directions it names; {} for none."""
    own = ((config.get("archs") or {}).get(arch) or {}).get("cutoffs") or {}
    return {d: list(own[d]) for d in DIRECTIONS if own.get(d)}


def cutoffs(config: dict, arch: str) -> dict[str, list[int]]:
    """Fig. 2-4's cut-offs of an arch per direction: `archs.<arch>.cutoffs.<direction>` where the arch sets it,
    else the top-level `cutoffs.<direction>`."""
    return {d: list(config["cutoffs"][d]) for d in DIRECTIONS} | arch_cutoffs(config, arch)


def width(config: dict, dataset: str) -> float:
    return float(with_defaults(dataset_config(config, dataset), "datasets", "*")["width"])


def published_weights(config: dict, dataset: str, arch: str, pretraining: str) -> str | None:
    """The published weights (`datasets.<d>.pretrained.<arch>.<pretraining>`) that replace this net's
    pretraining, or None: the net is pretrained by the workflow."""
    return ((dataset_config(config, dataset).get("pretrained") or {}).get(arch) or {}).get(pretraining)


def not_trained_marker(config: dict, dataset: str, arch: str, pretraining: str) -> list[str]:
    """The pretrain rule's extra input: for a net with published weights, a name no rule makes (so the workflow
    imports it instead, rule import_pretrained); else nothing."""
    if published_weights(config, dataset, arch, pretraining) is None:
        return []
    return [f"(published weights, not trained: {dataset} {arch} {pretraining})"]


def weights_input(config: dict, dataset: str, arch: str, pretraining: str) -> list[str]:
    """import_pretrained's input: the weights file, nothing for a torchvision enum, and a name no rule makes for a
    net the workflow pretrains (so `pretrain` makes it)."""
    source = published_weights(config, dataset, arch, pretraining)
    if source is None:
        return [f"(no published weights configured: {dataset} {arch} {pretraining})"]
    return [] if source.startswith("torchvision:") else [source]


def grouping(config: dict) -> dict:
    """How retraining cells are grouped into jobs (config `grouping`, defaults filled in)."""
    return with_defaults(config.get("grouping"), "grouping")


def recipe_params(config: dict, dataset: str, retrain: bool = False) -> dict:
    """Preset name and overrides (passed to jobs as params: a changed value reruns the jobs that use it), and
    `epoch_eval` (`epoch_eval_settings`) when the dataset evaluates after each epoch."""
    cfg = dataset_config(config, dataset)
    overrides = dict(cfg.get("recipe_overrides") or {})
    if retrain:
        overrides.update(cfg.get("retrain_overrides") or {})
    params = {"name": cfg["recipe"], "overrides": dict(sorted(overrides.items()))}
    epoch_eval = epoch_eval_settings(config, dataset)
    return params if epoch_eval is None else {**params, "epoch_eval": epoch_eval}


def eval_settings(config: dict, dataset: str, analysis_name: str | None = None) -> dict:
    """The dataset's evaluation settings, with an analysis's own `eval` overrides (reinit, features) on top;
    every key the schema has a default for is present."""
    cfg = with_defaults(dataset_config(config, dataset)["eval"], "datasets", "*", "eval")
    if analysis_name is not None:
        cfg.update((analysis(config, analysis_name) or {}).get("eval") or {})
    return dict(sorted(cfg.items()))


# the per-epoch held-out evaluation: what it always is, and the settings it takes from the config
EPOCH_EVAL_FIXED = {"attack": "pgd", "images": "tuning", "restarts": 1}
EPOCH_EVAL_KEYS = ("n", "eps", "step_size", "steps", "seed", "batch_size")


def epoch_eval_settings(config: dict, dataset: str) -> dict | None:
    """The per-epoch held-out evaluation of a dataset's training jobs (config `datasets.<d>.eval_each_epoch`), or
    None when off: PGD with the dataset's eval eps and step_size (steps: its own, else eval's), one restart, on
    n tuning images drawn with eval's seed. What the training jobs get (inside their `recipe` param, only when
    on, so that turning it on reruns them and leaving it off changes nothing)."""
    section = dataset_config(config, dataset).get("eval_each_epoch")
    if section is None:
        return None
    cfg = with_defaults(section, "datasets", "*", "eval_each_epoch")
    ev = eval_settings(config, dataset)
    return {**EPOCH_EVAL_FIXED, "n": cfg["n"], "eps": ev["eps"], "step_size": ev.get("step_size"),
            "steps": cfg.get("steps", ev.get("steps")), "seed": ev["seed"], "batch_size": ev["batch_size"]}


def autoattack_config(config: dict, dataset: str) -> dict | None:
    """A dataset's AutoAttack evaluation (config `datasets.<name>.autoattack`), or None."""
    return dataset_config(config, dataset).get("autoattack")


def autoattack_eval_settings(config: dict, dataset: str) -> dict:
    """The AutoAttack evaluation's settings: eps from the dataset's `eval`, n/seed/version from `autoattack`."""
    aa = with_defaults(autoattack_config(config, dataset), "datasets", "*", "autoattack")
    ev = eval_settings(config, dataset)
    return {"attack": "autoattack", "eps": ev["eps"], "version": aa["version"], "images": ev["images"],
            "n": aa.get("n", ev["n"]),
            "seed": aa.get("seed", ev["seed"]), "batch_size": ev["batch_size"]}


# Which config `resources` section a rule's jobs read (datasets.<name>.resources.<section>).
RESOURCE_SECTION = {"pretrain": "pretrain", "retrain": "retrain", "evaluate": "evaluate", "reinit": "evaluate",
                    "sample_features": "evaluate", "evaluate_autoattack": "evaluate"}


def resources(config: dict, dataset: str, rule: str, key: str, default_value):
    """A job resource (runtime, mem_mb, gpu) of a rule's jobs on a dataset."""
    section = RESOURCE_SECTION.get(rule, rule)
    return ((dataset_config(config, dataset).get("resources") or {}).get(section) or {}).get(key, default_value)


def claims_rules(config: dict) -> str:
    """The rules of the claims check (config `claims.rules`: v2 or v1)."""
    return str(with_defaults(config.get("claims"), "claims")["rules"])


def job_threads(config: dict) -> int:
    return int(with_defaults(config.get("resources"), "resources")["threads"])


def job_gpus(config: dict) -> int:
    return int(with_defaults(config.get("resources"), "resources")["gpu"])


