"""The protocol's evaluation steps as the workflow runs them: evaluate saved nets (Fig. 2-6) and the layer-wise
re-initialisation grid (Fig. 7). (Training steps: `advlayers.training.retrain_cell`; pretraining:
`advlayers.launch`.)

Each step reads self-describing checkpoints, checks that they are the nets it was asked for, and returns
records with per-sample outcomes, accuracies with Wilson intervals and provenance.
"""

from __future__ import annotations

import logging

from .checkpoints import load_checkpoint
from .evaluation import evaluate
from .io import sha256_file
from .provenance import environment
from .recipes import recipe_digest

log = logging.getLogger(__name__)


def attack_from_params(attack: dict):
    """The attack object of a config's `eval` settings (pgd: AttackSpec; autoattack: AutoAttackSpec)."""
    if attack.get("attack", "pgd") == "autoattack":
        from .autoattack import AutoAttackSpec

        return AutoAttackSpec(attack["eps"], version=attack.get("version", "standard"))
    from .attacks import AttackSpec

    return AttackSpec(attack["eps"], attack["step_size"], attack["steps"], random_start=True,
                      restarts=attack.get("restarts", 1))


def evaluate_checkpoints(checkpoints: dict, dataset, *, attack: dict, expect: dict, data_path, device="cpu",
                         config_digest: str = "") -> tuple[list[dict], list[dict]]:
    """Evaluate each {cell: checkpoint path}; every checkpoint must be the net `expect` + its cell names.

    Returns (records, outcome rows). Records carry the net's identity from the checkpoint (after checking it),
    the attack settings, accuracies with Wilson intervals, and provenance (recipe, precision, code, device)."""
    spec = attack_from_params(attack)
    records, outcomes = [], []
    data_digest = sha256_file(data_path)
    for cell, path in checkpoints.items():
        model, payload = load_checkpoint(path, device=device, expect={**expect, "cell": cell})
        meta = payload["meta"]
        if payload["inputs"].get("data", {}).get("sha256") not in (None, data_digest):
            raise ValueError(f"checkpoint {path} was trained on another version of {data_path} (its recorded sha256 "
                             "differs); rebuild it (`snakemake verify` lists the command)")
        record = evaluate(model, dataset.test, spec, n=attack.get("n"), seed=attack.get("seed", 0),
                          batch_size=attack.get("batch_size", 256), device=device, progress=False, outcomes=True,
                          labels={"dataset": payload["dataset"], "arch": payload["arch"],
                                  "width": payload.get("width", 1.0), "seed": payload["seed"],
                                  "pretraining": meta["pretraining"], "retraining": meta["retraining"], "cell": cell,
                                  "retrained_modules": meta["retrained_modules"]})
        per_sample = record.pop("outcomes")
        env = environment(device, precision=meta.get("precision"))
        record.update(epochs=meta.get("epochs", payload["epoch"]), recipe=payload["recipe"],
                      recipe_digest=recipe_digest(payload["recipe"]), checkpoint=str(path),
                      checkpoint_digest=payload["digest"],
                      provenance={**payload.get("provenance", {}), **{k: v for k, v in env.items() if k in
                                  ("created", "host")}, "precision": meta.get("precision", ""),
                                  "config_digest": config_digest, "eval_device_name": env["device_name"]})
        records.append(record)
        for index, clean, robust in zip(*per_sample.values()):
            outcomes.append({"dataset": record["dataset"], "arch": record["arch"], "seed": record["seed"],
                             "pretraining": record["pretraining"], "cell": cell, "attack": record["attack"],
                             "test_index": int(index), "clean_correct": bool(clean), "robust_correct": bool(robust)})
        log.info("%s: clean %.4f robust %.4f (%d images, %.1fs)", cell, record["clean_acc"], record["robust_acc"],
                 record["n_eval"], record["seconds"])
    return records, outcomes



def reinit_rows(model, initial_state: dict, data, *, attack: dict, bn_policies, redraw_seed: int, device="cpu",
                **labels) -> list[dict]:
    """Fig. 7: the original net, then every layer rewound and redrawn under each BatchNorm policy, each
    evaluated on the same test images; one row per (layer, operation, bn_policy) with per-sample outcomes
    (list columns test_index, clean_correct, robust_correct) for paired statistics. The original net is
    evaluated once and listed under every policy."""
    from .analyses import reinit_grid

    spec = attack_from_params(attack)

    def run(net):
        record = evaluate(net, data.test, spec, n=attack.get("n"), seed=attack.get("seed", 0),
                          batch_size=attack.get("batch_size", 256), device=device, progress=False, outcomes=True)
        outcomes = record.pop("outcomes")
        return {**record, **{k: v.tolist() for k, v in outcomes.items()}}

    rows, original = [], None
    for policy in bn_policies:
        for layer, operation, candidate in reinit_grid(model, initial_state, seed=redraw_seed, bn_policy=policy):
            if layer is None:
                original = original or run(candidate)
                record = original
            else:
                record = run(candidate)
            rows.append({**labels, "layer_index": -1 if layer is None else layer.index,
                         "layer": "none" if layer is None else layer.label,
                         "module": "none" if layer is None else layer.module,
                         "operation": operation, "bn_policy": policy, **record})
            log.info("%-24s %-7s %-10s clean %.3f robust %.3f", rows[-1]["layer"], operation, policy,
                     record["clean_acc"], record["robust_acc"])
    return rows
