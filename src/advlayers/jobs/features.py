"""The Fig. 8 jobs (rules `sample_features`, `embed_features`, `feature_divergence`): activation vectors of one
pretrained net on clean and adversarial test images, their 2-D embedding, and their divergence statistics."""

from __future__ import annotations

import logging
import time

from ..grid import conf
from ..grid.vocabulary import PRETRAINED, Setting
from ..io import file_digests, write_parquet

log = logging.getLogger(__name__)

EMBEDDING_SEED = 0  # every net's panels are embedded with the same seed
DIVERGENCE_COLUMNS = ("dataset", "arch", "width", "seed", "pretraining", "image_part", "module", "n_images", "n_vectors",
                      "channels", "mmd2", "mmd_p_value", "n_permutations", "mmd_bandwidth", "detector_auroc",
                      "detector_auroc_lo", "detector_auroc_hi", "detector_auroc_boot", "detector_acc", "n_train",
                      "n_test", "seconds")


def sample(*, data: str, pretrained: str, setting: Setting, features: dict, eval_settings: dict, device: str,
           out: str) -> None:
    """Activation vectors after the configured modules (`features`: the config's analyses.features) for clean
    test images and their PGD versions (`eval_settings`: the features' evaluation settings), written to `out`."""
    from ..analyses.features import sample_activations, save_activations
    from ..core.checkpoints import load_checkpoint
    from ..core.datasets import load_prepared
    from ..core.evaluation import attack_from_settings
    from .evaluate import eval_images

    if eval_settings["attack"] not in ("pgd", "apgd"):
        raise ValueError("feature sampling attacks with PGD (with eval.attack apgd: its PGD stage); the features' "
                         f"eval config names {eval_settings['attack']!r}; valid choices: pgd, apgd")
    features = conf.with_defaults(features, "analyses", "features")
    model, payload = load_checkpoint(pretrained, device=device, expect={**setting.identity(), "cell": PRETRAINED},
                                     sources=True)
    # the evaluation subset seed (not the training seed): every net of the grid is sampled on the same images,
    # drawn from the configured image part (eval.images)
    images = eval_images(load_prepared(data), eval_settings, n=features["n_images"],
                         what="analyses.features.n_images")
    result = sample_activations(model, images, modules=tuple(features["modules"]),
                                n_images=features["n_images"], vectors_per_image=features["vectors_per_image"],
                                attack=attack_from_settings({**eval_settings, "attack": "pgd"}),
                                seed=eval_settings["seed"],
                                batch_size=features["batch_size"], device=device)
    result["meta"].update(**setting.identity(), width=payload.get("width", 1.0),
                          image_part=conf.with_defaults(eval_settings, "datasets", "*", "eval")["images"],
                          inputs=file_digests({"data": data, "pretrained": pretrained}))
    save_activations(out, result)
    for module, part in result["modules"].items():
        log.info("%s: %d images x %d vectors of %d channels", module, result["meta"]["n_images"],
                 part["vectors_per_image"], part["clean"].shape[1])
    log.info("clean accuracy %.3f, adversarial accuracy %.3f on the sampled images",
             (result["pred_clean"] == result["label"]).mean(), (result["pred_adv"] == result["label"]).mean())


def embed(*, vectors: str, setting: Setting, method: str, embedding: dict, out: str) -> None:
    """Joint 2-D embedding of one net's clean and adversarial vectors, per module."""
    import pandas as pd

    from ..analyses.embedding import embed_clean_adv
    from ..analyses.features import load_activations

    result = load_activations(vectors)
    embedding = conf.with_defaults(embedding, "analyses", "features", "embedding")
    parts = []
    for module, part in result["modules"].items():
        t0 = time.perf_counter()
        embedded = embed_clean_adv(part["clean"], part["adv"], method, image_ids=part["image"], seed=EMBEDDING_SEED,
                                   max_points=embedding["max_points"])
        log.info("%s %s: %d points embedded in %.1fs", method, module, len(embedded), time.perf_counter() - t0)
        parts.append(embedded.assign(**setting.identity(), module=module, method=method))
    columns = ["dataset", "arch", "seed", "pretraining", "module", "method", "x", "y", "condition", "row", "image"]
    write_parquet(out, pd.concat(parts, ignore_index=True)[columns],
                  metadata={"inputs": file_digests({"vectors": vectors})})


def divergence(*, vectors: str, setting: Setting, options: dict, out: str) -> None:
    """MMD (whole-image permutations) and detector AUROC (image bootstrap) per module, clean vs adversarial."""
    import pandas as pd

    from ..analyses.divergence import feature_divergence
    from ..analyses.features import load_activations

    result = load_activations(vectors)
    options = conf.with_defaults(options, "analyses", "features", "divergence")
    meta, rows = result["meta"], []
    for module, part in result["modules"].items():
        stats = feature_divergence(part["clean"], part["adv"], part["image"], **options)
        log.info("%s: MMD^2 %.4g (p %.3g, %d images), detector AUROC %.3f [%.3f, %.3f]", module, stats["mmd2"],
                 stats["mmd_p_value"], stats["mmd_n_images"], stats["detector_auroc"], stats["detector_auroc_lo"],
                 stats["detector_auroc_hi"])
        rows.append({**setting.identity(), "width": float(meta.get("width", 1.0)),
                     "image_part": str(meta.get("image_part", "")), "module": module,
                     "n_images": int(meta["n_images"]), "n_vectors": len(part["clean"]),
                     "channels": part["clean"].shape[1], **stats})
    table = pd.DataFrame(rows)
    columns = list(DIVERGENCE_COLUMNS) + [c for c in table.columns if c not in DIVERGENCE_COLUMNS]
    write_parquet(out, table[columns], metadata={"inputs": file_digests({"vectors": vectors})})
