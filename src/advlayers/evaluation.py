"""Clean and PGD-N robust accuracy (paper: PGD-200, one restart, true label) as one flat record."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .attacks import AttackSpec, robust_correct


def evaluate(
    model,
    split,
    attack: AttackSpec,
    *,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    count: str = "any",
    device="cpu",
    progress: bool = True,
    **labels,
) -> dict:
    """Clean and robust accuracy of `model` on `split` (or a seeded subset of `n` samples).

    Returns a flat record with every setting that produced it: the `labels` given (dataset, arch, ...),
    the attack's eps/step_size/steps/restarts/random_start, count, n, seed, clean_acc, robust_acc, seconds.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    if n is not None:
        split = split.subset(n, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    clean_total = robust_total = seen = 0
    t0 = time.perf_counter()
    batches = split.batches(batch_size, shuffle=False, augment=False, device=device)
    with tqdm(total=len(split), desc=f"PGD-{attack.steps} eval", disable=not progress, leave=False) as bar:
        for x, y in batches:
            clean, robust = robust_correct(model, x, y, attack, count=count, generator=generator)
            clean_total += int(clean.sum())
            robust_total += int(robust.sum())
            seen += y.numel()
            bar.update(y.numel())
            bar.set_postfix(clean=f"{clean_total / seen:.3f}", robust=f"{robust_total / seen:.3f}")
    return {
        **labels,
        **attack.as_dict(),
        "count": count,
        "n_eval": seen,
        "eval_seed": seed,
        "clean_acc": clean_total / seen,
        "robust_acc": robust_total / seen,
        "seconds": time.perf_counter() - t0,
    }
