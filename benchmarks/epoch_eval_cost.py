"""Cost of config `eval_each_epoch` (per-epoch held-out evaluation) against the demo's training epochs.

    PYTHONPATH=src python benchmarks/epoch_eval_cost.py [--epochs 4] [--n 256] [--threads 1]

The demo's pretraining (config/config.yaml: mnist5k, ResNet-18 width 0.25, recipe mnist5k-demo with its
overrides) for --epochs epochs per pretraining, with `eval_each_epoch: {n: --n}` (PGD-10 of eval's eps and step
on tuning images, fp32 as every evaluation). CPU seconds of this process (time.process_time: steadier than wall
seconds on a shared machine): each evaluation, and an epoch = (the run's total - its evaluations) / epochs. The
evaluation's share grows as a net becomes robust: PGD stops early on the images it has broken, so a robust net's
images take all steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from advlayers.core.datasets import load_dataset
    from advlayers.core.epoch_eval import epoch_evaluator
    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import pretrain
    from advlayers.grid import conf, validate

    torch.set_num_threads(args.threads)
    config = validate.load(REPO / "config" / "config.yaml", roots=False)
    config["datasets"]["mnist5k"]["eval_each_epoch"] = {"n": args.n}
    params = conf.recipe_params(config, "mnist5k")
    recipe = get_recipe(params["name"], **{**params["overrides"], "epochs": args.epochs})
    dataset = load_dataset("mnist5k")
    evaluator = epoch_evaluator(dataset, "mnist5k", params["epoch_eval"])
    seconds: list[float] = []

    def timed(model, device):
        t = time.process_time()
        out = evaluator(model, device)
        seconds.append(time.process_time() - t)
        return out

    timed.settings = evaluator.settings
    print(f"eval_each_epoch {evaluator.settings}; {args.threads} thread(s)")
    for mode in ("conventional", "adversarial"):
        seconds.clear()
        t = time.process_time()
        result = pretrain("resnet18", dataset, recipe, mode=mode, seed=0, progress=False,
                          width=conf.width(config, "mnist5k"), epoch_eval=timed)
        epoch = (time.process_time() - t - sum(seconds)) / args.epochs
        shares = ", ".join(f"{100 * s / epoch:.1f}%" for s in seconds)
        print(f"{mode} ({result.precision}): epoch {epoch:.2f} CPU s; evaluations {shares} of an epoch "
              f"(mean {100 * sum(seconds) / args.epochs / epoch:.1f}%); robust accuracy after the last epoch "
              f"{result.history[-1]['heldout_robust_acc']:.3f}")


if __name__ == "__main__":
    main()
