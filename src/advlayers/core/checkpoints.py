"""Checkpoints: written atomically (`advlayers.io`), read with `torch.load(weights_only=True)`, self-describing.

A checkpoint holds the model's state dict and what identifies it: arch, width, classes, image size, dataset,
seed, epoch, recipe, and `meta` (pretraining, retraining, cell, retrained modules, precision, history, ...).
For provenance it also records `digest`, the content hash of its own weights (`io.state_digest`), and
`inputs`, the sha256 of every file it was made from (the prepared data, the pretrained net). Loading checks
the digest (a flipped bit is an error, not a silently different net), refuses NaN/Inf weights and, given
`expect`, that the checkpoint is the one the caller asked for (a swapped file is an error).

Only tensors, numbers, strings, None, lists and dicts go in, so `weights_only=True` can read every field.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import ArtifactError, check_sources, save_torch, state_digest
from .models import ModularNet, build_model

FORMAT = "advlayers-checkpoint-v2"
REQUIRED = ("format", "arch", "num_classes", "image_size", "dataset", "seed", "epoch", "model", "digest")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or not matching what it is used for."""


def save_checkpoint(path, model: ModularNet, *, dataset: str, seed: int, epoch: int, recipe: dict | None = None,
                    inputs: dict | None = None, provenance: dict | None = None, **meta) -> dict:
    """Save `model` with everything needed to rebuild and identify it; returns the payload (without weights).

    `inputs`: {role: {"path": ..., "sha256": ...}} of the files it was made from; `provenance`: where and how
    (`advlayers.provenance.environment()`); `meta` values must be plain data."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        **model.spec.as_dict(),
        "dataset": dataset,
        "seed": int(seed),
        "epoch": int(epoch),
        "recipe": recipe or {},
        "meta": meta,
        "inputs": inputs or {},
        "provenance": provenance or {},
        "digest": state_digest(state),
        "model": state,
    }
    save_torch(path, payload)
    return {k: v for k, v in payload.items() if k != "model"}


def read_checkpoint(path) -> dict:
    """The payload of an advlayers checkpoint, its weights' digest verified."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file (a retraining group's folder "
                              "holds one <cell>.pt per cell: name one of them)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle error, or an object weights_only refuses
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "it holds objects other than tensors and plain data"
        raise CheckpointError(f"checkpoint {path} is corrupt or not an advlayers checkpoint ({type(e).__name__}: "
                              f"{reason[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"checkpoint {path} is not an advlayers checkpoint of format {FORMAT!r} (found "
                              f"{found!r}; rebuild it with the workflow)")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks fields {missing}")
    bad = [k for k, v in payload["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} has NaN/Inf weights in {len(bad)} tensor(s), e.g. {bad[0]}")
    if state_digest(payload["model"]) != payload["digest"]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not match their recorded digest")
    return payload


def check_expected(path, payload: dict, expect: dict) -> None:
    """One-line error unless every expected field (top level or `meta`) has the expected value."""
    for key, want in expect.items():
        if want is None:
            continue
        have = payload[key] if key in payload else payload.get("meta", {}).get(key)
        if have != want:
            raise CheckpointError(f"checkpoint {path} has {key}={have!r}, expected {want!r}: it is not the net "
                                  "this job is for (swapped or stale file; `snakemake verify` lists the fix)")


def load_checkpoint(path, *, arch: str | None = None, dataset: str | None = None, num_classes: int | None = None,
                    expect: dict | None = None, device="cpu", sources: bool = False) -> tuple[ModularNet, dict]:
    """(model, payload). Expected `arch`/`dataset`/`num_classes` and `expect` fields must match the checkpoint;
    with `sources` (the workflow's jobs) every input it records must still be the exact file it was made from (a
    stale checkpoint of the right identity, e.g. retrained from another pretrained net, is an error)."""
    payload = read_checkpoint(path)
    if sources:
        try:
            check_sources(f"checkpoint {path}", payload.get("inputs") or {})
        except ArtifactError as e:
            raise CheckpointError(str(e)) from None
    check_expected(path, payload, {"arch": arch, "dataset": dataset, "num_classes": num_classes, **(expect or {})})
    if payload.get("source"):  # a config arch: buildable from the checkpoint alone
        from .splitting import ArchSource, register_source, source_of

        if source_of(payload["arch"]) is None:
            register_source(ArchSource(payload["arch"], payload["source"]))
    model = build_model(payload["arch"], payload["num_classes"], payload["image_size"],
                        width=payload.get("width", 1.0), mean=payload.get("mean"), std=payload.get("std"))
    try:
        model.load_state_dict(payload["model"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise CheckpointError(f"checkpoint {path} does not fit arch {payload['arch']}: {' '.join(first)}") from None
    return model.to(device), payload
