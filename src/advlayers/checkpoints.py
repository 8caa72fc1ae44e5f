"""Checkpoints: written atomically (temporary file in the same folder + rename), read with
`torch.load(weights_only=True)`, and self-describing (arch, dataset, recipe, seed, epoch, ...).

Only tensors, numbers, strings, None, lists and dicts go in, so `weights_only=True` can read every field.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import torch

from .models import ModularNet, build_model

FORMAT = "advlayers-checkpoint-v1"
REQUIRED = ("format", "arch", "num_classes", "image_size", "dataset", "seed", "epoch", "model")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not matching what it is used for."""


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_checkpoint(path, model: ModularNet, *, dataset: str, seed: int, epoch: int, recipe: dict | None = None,
                    **meta) -> None:
    """Save `model` with everything needed to rebuild and identify it. `meta` values must be plain data."""
    payload = {
        "format": FORMAT,
        **model.spec.as_dict(),
        "dataset": dataset,
        "seed": int(seed),
        "epoch": int(epoch),
        "recipe": recipe or {},
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_save(payload, path)


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle error, or an object weights_only refuses
        raise CheckpointError(f"checkpoint {path} is corrupt or not an advlayers checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an advlayers checkpoint (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks fields {missing}")
    return payload


def load_checkpoint(path, *, arch: str | None = None, dataset: str | None = None, num_classes: int | None = None,
                    device="cpu") -> tuple[ModularNet, dict]:
    """(model, payload). Expected `arch`/`dataset`/`num_classes`, when given, must match the checkpoint."""
    payload = read_checkpoint(path)
    for key, want in (("arch", arch), ("dataset", dataset), ("num_classes", num_classes)):
        if want is not None and payload[key] != want:
            raise CheckpointError(f"checkpoint {path} has {key}={payload[key]!r}, expected {want!r}")
    model = build_model(payload["arch"], payload["num_classes"], payload["image_size"])
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(f"checkpoint {path} does not fit arch {payload['arch']}: {' '.join(first)}") from None
    return model.to(device), payload
