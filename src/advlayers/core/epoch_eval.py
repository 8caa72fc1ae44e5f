"""Per-epoch held-out evaluation during training (config `datasets.<d>.eval_each_epoch`, off by default).

After every epoch, the clean and PGD accuracy of the same n TUNING images (`splits.image_part`; never the
confirmation images, on which the verdicts are taken) go into the epoch's history record as the `heldout_*`
fields, and so into the checkpoint, the `training_curves` table and its figure.

Training is unchanged by it: the images are a fixed seeded subset; each batch's random start comes from its own
generator (`evaluation.batch_generator`), never the global RNG that dropout draws from; the attack takes input
gradients only (`torch.autograd.grad`), so no parameter's `.grad` is touched; and the next epoch puts the trained
units back in train mode (`training.set_train_modes`). The evaluation runs after an epoch's batches and before its
state is saved, so a run resumed from any saved state records the same numbers as an uninterrupted one. Every
rank of a multi-process run evaluates the same images (no collective: the ranks' weights are identical).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import check_int
from ..grid.conf import EPOCH_EVAL_FIXED, EPOCH_EVAL_KEYS
from .attacks import AttackSpec
from .evaluation import evaluate
from .splits import image_part

# the history record's fields (report.training_curves reads them; absent when the run did not evaluate)
FIELDS = ("heldout_clean_acc", "heldout_robust_acc", "heldout_attack", "heldout_eps", "heldout_n", "heldout_seconds")


@dataclass
class EpochEval:
    """Called with the model after each epoch; returns the `FIELDS` of that epoch's record."""

    images: object  # the tuning part of the test split (the n evaluated are its seeded subset)
    attack: AttackSpec
    settings: dict  # as `grid.conf.epoch_eval_settings` gives them; in the resume fingerprint and the checkpoint

    def __call__(self, model, device) -> dict:
        s = self.settings
        record = evaluate(model, self.images, self.attack, n=s["n"], seed=s["seed"], batch_size=s["batch_size"],
                          device=device, progress=False)
        return {"heldout_clean_acc": record["clean_acc"], "heldout_robust_acc": record["robust_acc"],
                "heldout_attack": record["attack"], "heldout_eps": float(s["eps"]), "heldout_n": record["n_eval"],
                "heldout_seconds": record["seconds"]}


def epoch_evaluator(dataset, name: str, settings: dict | None) -> EpochEval | None:
    """The evaluator of a prepared `dataset` (named `name`: the tuning part's size depends on it) for the
    settings of `grid.conf.epoch_eval_settings`; None when they are None (off). More images than the tuning
    part has is an error before any training."""
    if not settings:
        return None
    check_settings(settings)
    tuning = image_part(dataset.test, "tuning", name)
    check_int("eval_each_epoch.n", settings["n"], minimum=1)
    if settings["n"] > len(tuning):
        raise ValueError(f"eval_each_epoch.n = {settings['n']}, but the tuning part of {name}'s test split has "
                         f"{len(tuning)} images; choose at most {len(tuning)}")
    attack = AttackSpec(settings["eps"], settings["step_size"], settings["steps"], random_start=True,
                        restarts=EPOCH_EVAL_FIXED["restarts"])
    return EpochEval(tuning, attack, dict(sorted(settings.items())))


def check_settings(settings: dict) -> None:
    """One-line ValueError unless `settings` are what `grid.conf.epoch_eval_settings` gives (the fixed keys may be
    left out): a key it does not know, or another attack, part or number of restarts, would be ignored."""
    valid = [*EPOCH_EVAL_FIXED, *EPOCH_EVAL_KEYS]
    unknown = [k for k in settings if k not in valid]
    if unknown:
        raise ValueError(f"eval_each_epoch settings: unknown key {', '.join(map(repr, unknown))}; valid keys: "
                         f"{', '.join(valid)}")
    for key, value in EPOCH_EVAL_FIXED.items():
        if settings.get(key, value) != value:
            raise ValueError(f"eval_each_epoch.{key} = {settings[key]!r} is not valid; valid choices: {value!r} "
                             f"(always PGD with {EPOCH_EVAL_FIXED['restarts']} restart on tuning images)")
    missing = [k for k in EPOCH_EVAL_KEYS if settings.get(k) is None]
    if missing:
        raise ValueError(f"eval_each_epoch settings lack {missing} (grid.conf.epoch_eval_settings gives them all)")
