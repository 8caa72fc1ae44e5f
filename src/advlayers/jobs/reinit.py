"""The layer re-initialisation job (rule `reinit`, paper Fig. 7): every layer of a pretrained net rewound to its
epoch-0 values and redrawn, under each BatchNorm policy, each evaluated on the same test images; no retraining."""

from __future__ import annotations

import logging

from ..analyses.reinit import reinit_grid
from ..core.checkpoints import load_checkpoint
from ..core.datasets import load_prepared
from ..grid.vocabulary import PRETRAINED, REDRAW_SEED_OFFSET, Setting
from ..io import file_digests, write_parquet
from .evaluate import evaluate_split

log = logging.getLogger(__name__)


def reinit_rows(model, initial_state: dict, data, *, eval_settings: dict, bn_policies, redraw_seed: int, device="cpu",
                **labels) -> list[dict]:
    """The original net, then every layer rewound and redrawn under each BatchNorm policy; one row per (layer,
    operation, bn_policy) with per-sample outcomes (list columns test_index, clean_correct, robust_correct) for
    paired statistics. The original net is evaluated once and listed under every policy."""

    def run_one(net):
        record = evaluate_split(net, data, eval_settings, device=device)
        outcomes = record.pop("outcomes")
        return {**record, **{k: v.tolist() for k, v in outcomes.items()}}

    rows, original = [], None
    for policy in bn_policies:
        for layer, operation, candidate in reinit_grid(model, initial_state, seed=redraw_seed, bn_policy=policy):
            if layer is None:
                original = original or run_one(candidate)
                record = original
            else:
                record = run_one(candidate)
            rows.append({**labels, "layer_index": -1 if layer is None else layer.index,
                         "layer": "none" if layer is None else layer.label,
                         "module": "none" if layer is None else layer.module,
                         "operation": operation, "bn_policy": policy, **record})
            log.info("%-24s %-7s %-10s clean %.3f robust %.3f", rows[-1]["layer"], operation, policy,
                     record["clean_acc"], record["robust_acc"])
    return rows


def run(*, data: str, pretrained: str, initial: str, setting: Setting, eval_settings: dict, bn_policies, device: str,
        out: str) -> None:
    """The job: Fig. 7's rows of one pretrained net, written to `out` with the digests of its inputs."""
    model, payload = load_checkpoint(pretrained, device=device, expect={**setting.identity(), "cell": PRETRAINED},
                                     sources=True)
    start, _ = load_checkpoint(initial, device=device, expect={**setting.identity(), "cell": "initial"}, sources=True)
    # Redraws come from a stream other than the pretraining seed's (which would be a rewind).
    rows = reinit_rows(model, start.state_dict(), load_prepared(data), eval_settings=eval_settings,
                       bn_policies=bn_policies, redraw_seed=REDRAW_SEED_OFFSET + setting.seed, device=device,
                       **setting.identity(), width=payload.get("width", 1.0))
    write_parquet(out, rows, metadata={"inputs": file_digests({"data": data, "pretrained": pretrained,
                                                               "initial": initial})})
