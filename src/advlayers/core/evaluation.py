"""Clean and robust accuracy (paper: PGD-200, one restart, true label) as one flat record, with the
per-sample outcomes that let any two nets be compared on the same test images.

`attack` is an `attacks.AttackSpec` (PGD / FGSM-RS) or any object with the same small protocol
(`name`, `as_dict()`, `robust_correct(model, x, y, generator=...)`), e.g. `autoattack.AutoAttackSpec` or
`ensemble.APGDEnsembleSpec`;
`attack_from_settings` makes one from a config's evaluation settings.
`split` is an advlayers split (seeded subsets, test indices known) or a plain iterable of (x, y) batches such as
a torch DataLoader (indices are positions in iteration order).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from ..checks import check_int
from ..stats import wilson
from .attacks import AttackSpec

EVAL_ATTACKS = ("pgd", "autoattack", "apgd")  # config eval.attack (grid/config.schema.yaml)


def attack_from_settings(settings: dict):
    """The attack object of a config's evaluation settings (`grid.conf.eval_settings`): `attack: pgd` ->
    `attacks.AttackSpec` (eps, step_size, steps, restarts; random start), `attack: autoattack` ->
    `autoattack.AutoAttackSpec` (eps, version), `attack: apgd` -> `ensemble.APGDEnsembleSpec` (that PGD, then
    APGD-CE and APGD-DLR with `apgd_steps` each on the survivors). The one place settings become an attack."""
    kind = settings.get("attack", "pgd")
    if kind not in EVAL_ATTACKS:
        raise ValueError(f"unknown evaluation attack {kind!r}; valid choices: {', '.join(EVAL_ATTACKS)}")
    if kind == "autoattack":
        from .autoattack import AutoAttackSpec

        return AutoAttackSpec(settings["eps"], version=settings.get("version", "standard"))
    pgd = AttackSpec(settings["eps"], settings["step_size"], settings["steps"], random_start=True,
                     restarts=settings.get("restarts", 1))
    if kind == "apgd":
        from .ensemble import APGDEnsembleSpec

        return APGDEnsembleSpec(pgd, apgd_steps=settings.get("apgd_steps", 100), seed=settings.get("seed", 0))
    return pgd


def _robust_correct(attack, model, x, y, count, generator, after: dict, checks: list):
    """(clean, robust) of one batch; an attack with a per-attack breakdown (AutoAttack, APGD) adds its robust
    counts after each attack to `after` and its check messages to `checks`."""
    if isinstance(attack, AttackSpec):
        return attack.robust_correct(model, x, y, count=count, generator=generator)
    if not hasattr(attack, "robust_correct_by_attack"):
        return attack.robust_correct(model, x, y, generator=generator)
    if hasattr(attack, "pgd"):  # the APGD ensemble: its PGD stage draws from the evaluation's generator
        clean, by_attack, messages = attack.robust_correct_by_attack(model, x, y, generator=generator, count=count)
    else:
        clean, by_attack, messages = attack.robust_correct_by_attack(model, x, y)
    for a, r in by_attack.items():
        after[a] = after.get(a, 0) + int(r.sum())
    checks += [m for m in messages if m not in checks]
    return clean, list(by_attack.values())[-1]


def _batches(split, n, seed, batch_size, device, shard=None):
    """(x, y, test_index, position) batches of the first `n` samples of a seeded subset (advlayers split) or of
    an iterable of (x, y) batches; position: the batch's first sample's place in that order. `shard` = (start,
    stop) keeps the batches of positions [start, stop) (`grid.sharding.shard_bounds`: whole batches)."""
    _check_shard(shard, batch_size)
    lo, hi = shard if shard is not None else (0, None)
    if hasattr(split, "subset") and hasattr(split, "batches"):
        if n is not None:
            split = split.subset(n, seed=seed)
        if shard is not None:
            split = split.take(torch.arange(lo, min(hi, len(split))))
        start = lo
        for x, y in split.batches(batch_size, shuffle=False, augment=False, device=device):
            yield x, y, split.index[start - lo:start - lo + len(y)], start
            start += len(y)
        return
    seen = 0
    for x, y in split:
        if (n is not None and seen >= n) or (hi is not None and seen >= hi):
            return
        take = len(y) if n is None else min(len(y), n - seen)
        if seen >= lo:
            yield x[:take].to(device), y[:take].to(device), torch.arange(seen, seen + take), seen
        seen += take


def _accuracies(name: str, k: int, n: int) -> dict:
    """{name: k / n, name_lo, name_hi: its 95% Wilson interval}."""
    lo, hi = wilson(k, n)
    return {name: k / n, f"{name}_lo": lo, f"{name}_hi": hi}


def batch_generator(seed: int, position: int) -> torch.Generator:
    """The attack's random stream of the batch starting at `position` of the evaluation order: from (seed,
    position) alone, so that a batch draws the same random start whichever shard evaluates it."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, position]).generate_state(1)[0]))


def _check_shard(shard, batch_size: int) -> None:
    if shard is not None and (shard[0] % batch_size or shard[0] >= shard[1]):
        raise ValueError(f"shard {shard}: must start at a multiple of batch_size = {batch_size} and not be empty")


def evaluate(model, split, attack, *, n: int | None = None, seed: int = 0, batch_size: int = 256,
             count: str = "any", device="cpu", progress: bool = True, outcomes: bool = False,
             labels: dict | None = None, shard: tuple[int, int] | None = None, channels_last: bool = False,
             **more_labels) -> dict:
    """Clean and robust accuracy of `model` on `split` (or a seeded subset of `n` samples).

    `seed` draws the test subset and each batch's attack stream (`batch_generator`; recorded as eval_seed); `shard`
    = (start, stop): only those positions of it (whole batches). `channels_last`: model and images put in that memory
    layout first (fp32 either way; attacks run 1.2-1.3x faster on CPU); otherwise the model keeps its own.
    `labels` and keyword labels go into the record.

    Returns a flat record with every setting that produced it: the labels given (dataset, arch, ...), the
    attack's settings and name, count, n_eval, eval_seed, clean_acc and robust_acc with their 95% Wilson
    intervals (`*_lo`, `*_hi`), seconds; for an attack with a per-attack breakdown (AutoAttack, APGD) also
    `robust_acc_after` ({attack: robust accuracy after it and every attack before it}) and `checks` (messages of
    the reference implementation's checks, each also issued as an `AutoAttackCheckWarning`). With `outcomes=True` the record also has "outcomes": {"test_index",
    "clean_correct", "robust_correct"} arrays, one entry per evaluated sample.
    """
    if n is not None:
        check_int("n (test images to evaluate)", n, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    device = torch.device(device)
    model = model.to(device).eval()
    if channels_last:  # otherwise the model keeps its layout (a net evaluated during its training keeps training's)
        model = model.to(memory_format=torch.channels_last)
    index_parts, clean_parts, robust_parts, after, checks = [], [], [], {}, []
    t0 = time.perf_counter()
    name = attack.name
    with tqdm(total=n, desc=f"{name} eval", disable=not progress, leave=False) as bar:
        for x, y, index, position in _batches(split, n, seed, batch_size, device, shard):
            x = x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
            clean, robust = _robust_correct(attack, model, x, y, count, batch_generator(seed, position), after, checks)
            index_parts.append(index.cpu())
            clean_parts.append(clean.cpu())
            robust_parts.append(robust.cpu())
            bar.update(len(y))
    if not index_parts:
        raise ValueError("nothing to evaluate: the split is empty")
    clean, robust = torch.cat(clean_parts).numpy(), torch.cat(robust_parts).numpy()
    seen = len(clean)
    record = {**(labels or {}), **more_labels, "attack": name, **attack.as_dict(), "count": count,
              "channels_last": bool(channels_last), "n_eval": seen, "eval_seed": seed,
              **_accuracies("clean_acc", int(clean.sum()), seen), **_accuracies("robust_acc", int(robust.sum()), seen),
              "seconds": time.perf_counter() - t0}
    record.update({} if shard is None else {"shard_start": int(shard[0]), "shard_stop": int(shard[0]) + seen})
    if after:
        record["robust_acc_after"] = {a: k / seen for a, k in after.items()}
        from .autoattack import surface_checks

        record["checks"] = surface_checks(checks)
    if outcomes:
        record["outcomes"] = {"test_index": torch.cat(index_parts).numpy().astype(np.int64),
                              "clean_correct": clean.astype(bool), "robust_correct": robust.astype(bool)}
    return record
