"""The import job: published weights (config `datasets.<d>.pretrained`) written as a pretrained net's checkpoint,
in the format pretraining writes, so every later stage reads it unchanged; provenance records the source and its
sha256. Its `initial` file (Fig. 7's rewind source) is a fresh draw of the training seed: the published net's
own epoch-0 weights are unknown."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def run(*, data, dataset: str, arch: str, pretraining: str, source: str, out, initial, seed: int = 0,
        width: float = 1.0, device: str = "cpu") -> int:
    from .. import provenance
    from ..core import published
    from ..core.checkpoints import save_checkpoint
    from ..core.datasets import load_prepared
    from ..core.models import build_model
    from ..io import sha256_file

    prepared = load_prepared(data)
    info = prepared.info
    weights = published.load_published(source)
    published.check_normalisation(weights, info.mean, info.std, dataset)
    model = build_model(arch, info.num_classes, info.image_size, seed=seed, width=width, mean=info.mean, std=info.std)
    common = dict(dataset=dataset, seed=seed, recipe={}, pretraining=pretraining, retraining="none",
                  retrained_modules=[], units=[], provenance=provenance.environment(device),
                  inputs={"data": {"path": str(data), "sha256": sha256_file(data)}})
    save_checkpoint(initial, model, epoch=0, cell="initial", epochs=0, **common)
    published.load_into(model, weights)
    common["inputs"]["weights"] = {"path": source, "sha256": weights.sha256}
    save_checkpoint(out, model, epoch=0, cell="pretrained", epochs=0,
                    published={"source": source, "sha256": weights.sha256, "layout": weights.layout,
                               "mean": list(weights.mean), "std": list(weights.std)}, **common)
    log.info("imported %s (%s layout, sha256 %s) as %s", source, weights.layout, weights.sha256, Path(out))
    return 0
