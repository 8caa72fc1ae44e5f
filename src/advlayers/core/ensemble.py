"""An evaluation attack that stronger attacks do not overturn: PGD, then APGD-CE, then APGD-DLR on the survivors.

`APGDEnsembleSpec` is the attack of config `eval.attack: apgd` (`evaluation.attack_from_settings`): the config's
PGD (eps, step_size, steps, restarts; random start, early stopping: an image counts as broken as soon as any
iterate breaks it), then APGD with the cross-entropy loss and APGD with the DLR loss (Croce & Hein's reference
implementation, `autoattack.APGDSpec`, `apgd_steps` iterations each), each run only on the images every earlier
attack left unbroken. An image is robust only if no attack broke it, so the robust accuracy is at most that of
the PGD stage alone, and the breakdown after each attack (`robust_acc_after` in the evaluation record) never
grows. Per-sample outcomes are exact (one robust_correct per image).

It follows the protocol `evaluation.evaluate` accepts (`name`, `as_dict()`, `robust_correct`,
`robust_correct_by_attack`). The PGD stage draws its random start from the evaluation's generator; the APGD
stages seed themselves from `seed` (the reference's own seeding, inside `torch.random.fork_rng`), so the same
seed gives the same outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_int
from .attacks import AttackSpec
from .autoattack import APGDSpec, surface_checks


@dataclass(frozen=True)
class APGDEnsembleSpec:
    """PGD (`pgd`, an L-inf `attacks.AttackSpec`) + APGD-CE-`apgd_steps` + APGD-DLR-`apgd_steps` on the survivors."""

    pgd: AttackSpec
    apgd_steps: int = 100
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.pgd, AttackSpec):
            raise TypeError(f"pgd must be an attacks.AttackSpec, not {type(self.pgd).__name__}")
        check_int("apgd_steps", self.apgd_steps, minimum=1)
        check_int("seed", self.seed, minimum=0)

    @property
    def eps(self) -> float:
        """The radius of every stage (the PGD's)."""
        return self.pgd.eps

    @property
    def stages(self) -> tuple:
        """The attacks in the order they run."""
        return (self.pgd, *(APGDSpec(self.pgd.eps, steps=self.apgd_steps, loss=loss, seed=self.seed)
                            for loss in ("ce", "dlr")))

    @property
    def name(self) -> str:
        """'PGD-10+APGD-CE-25+APGD-DLR-25': what tables and figures call it."""
        return "+".join(stage.name for stage in self.stages)

    def as_dict(self) -> dict:
        return {**self.pgd.as_dict(), "version": "pgd+apgd-ce+apgd-dlr", "norm": "Linf",
                "apgd_steps": self.apgd_steps}

    def robust_correct_by_attack(self, model, x: torch.Tensor, y: torch.Tensor, *,
                                 generator: torch.Generator | None = None, count: str = "any"):
        """(clean_correct, {stage name: robust_correct after it and every stage before it}, check messages of
        the reference implementation)."""
        clean, robust = self.pgd.robust_correct(model, x, y, count=count, generator=generator)
        robust = robust.clone()
        after, messages = {self.pgd.name: robust.clone()}, []
        for stage in self.stages[1:]:
            idx = robust.nonzero().squeeze(1)
            if idx.numel():
                _, by_attack, found = stage.robust_correct_by_attack(model, x[idx], y[idx])
                robust[idx] = list(by_attack.values())[-1].to(robust.device)
                messages += [m for m in found if m not in messages]
            after[stage.name] = robust.clone()
        return clean, after, messages

    def robust_correct(self, model, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None,
                       count: str = "any"):
        clean, after, messages = self.robust_correct_by_attack(model, x, y, generator=generator, count=count)
        surface_checks(messages)
        return clean, list(after.values())[-1]
