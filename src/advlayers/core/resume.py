"""Resume state of a training run, and the preemption signals that save it.

A state file holds everything to continue a run bit-identically (CPU): model, optimizer, scheduler, RNGs,
history, completed epochs and - when preempted mid-epoch - the batches done, the epoch generator's state and
the epoch's partial sums. It is written atomically (`advlayers.io`), so a SIGKILL at any moment leaves the
previous state intact.

A state is only used for the run it belongs to: its *fingerprint* covers the recipe, mode, seed, trained
units, arch and the content hash of the weights the run started from (a retraining starts from a pretrained
net: a state made from another pretrained net is discarded, with a log line, not resumed).

SIGTERM / SIGUSR1 (what SLURM sends before a kill) and SIGINT (Ctrl-C) make training finish the current batch,
save a mid-epoch state and raise `Preempted` (a SystemExit with code 128 + signal number).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import save_torch, stale_temporaries
from . import distributed

log = logging.getLogger(__name__)

STATE_FORMAT = "advlayers-train-state-v2"
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(SystemExit):
    """Training got SIGTERM/SIGUSR1/SIGINT: it finished the current batch, saved a resume state and stops. A
    SystemExit (code 128 + signal number: 143 for SIGTERM, 130 for Ctrl-C), so an uncaught one ends the process
    with a non-zero status, Snakemake marks the job failed, and a rerun resumes."""

    def __init__(self, signum: int, epoch: int, batch: int, state_path):
        super().__init__(128 + signum)
        self.signum, self.epoch, self.batch, self.state_path = signum, epoch, batch, state_path

    def __str__(self):
        return (f"preempted by signal {self.signum} at epoch {self.epoch + 1}, batch {self.batch}; "
                f"state saved to {self.state_path}")


class PreemptionFlag:
    """Records SIGTERM/SIGUSR1/SIGINT instead of dying while installed (main thread only; restored on exit)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum = 0
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if not self.signum:
            log.warning("got signal %d: saving the training state after the current batch", signum)
        self.signum = signum

    def __enter__(self):
        if self.enabled:
            for s in PREEMPT_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    def poll(self) -> int:
        """The signal number (0 = none), agreed over all ranks so that they stop at the same batch."""
        return distributed.all_reduce_max(self.signum) if distributed.is_distributed() else self.signum


@dataclass
class Resume:
    """Where a run continues: completed epochs, and within the next epoch the batches already done."""

    epoch: int = 0
    batch: int = 0
    generator: torch.Tensor | None = None  # the epoch generator's state after those batches
    sums: tuple = (0.0, 0, 0)  # this rank's partial epoch sums: loss * n, correct, seen
    history: list | None = None


def fingerprint(recipe, mode: str, seed: int, units, arch: str, start_digest: str) -> dict:
    r = recipe.as_dict()
    r.pop("compile")  # how the forward pass is executed, not what is trained: a state resumes either way
    return {"recipe": r, "mode": mode, "seed": seed, "units": units, "arch": arch, "start": start_digest}


def remove_stale_temporaries(state_path) -> None:
    for tmp in stale_temporaries(state_path):
        tmp.unlink(missing_ok=True)


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_state(path, fp: dict, epoch: int, model, optimizer, scheduler, history: list, device, *, batch: int = 0,
               generator: torch.Tensor | None = None, sums: list | None = None) -> None:
    """Collective in a multi-process run (gathers every rank's RNG state); rank 0 writes."""
    rngs = distributed.all_gather_objects(_rng_state(torch.device(device)))
    if not distributed.is_main():
        return
    state = {
        "format": STATE_FORMAT, "fingerprint": fp,
        "epoch": epoch,  # completed epochs
        "batch": batch,  # > 0: batches of the next epoch already done (preempted mid-epoch)
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(), "rng_ranks": rngs, "history": history,
    }
    if batch:
        state["generator"], state["sums"] = generator, sums
    save_torch(path, state)


def load_state(path, fp: dict, model, optimizer, scheduler, device) -> Resume:
    """Restore the run from `path` if it belongs to this run (same fingerprint), else start from epoch 0."""
    path = Path(path)
    if not path.exists():
        return Resume()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        log.warning("ignoring unreadable training state %s (%s); starting from epoch 0", path, type(e).__name__)
        return Resume()
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        log.warning("ignoring training state %s of another format; starting from epoch 0", path)
        return Resume()
    if state.get("fingerprint") != fp:
        old = state.get("fingerprint") or {}
        why = [k for k in fp if old.get(k) != fp[k]]
        log.warning("discarding training state %s: it belongs to another run (differs in %s); starting from "
                    "epoch 0", path, ", ".join(why) or "format")
        return Resume()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rank, world = distributed.rank(), distributed.world_size()
    rngs = state.get("rng_ranks")
    if rngs and len(rngs) == world:
        torch.set_rng_state(rngs[rank]["cpu"])
        if "cuda" in rngs[rank] and torch.device(device).type == "cuda":
            torch.cuda.set_rng_state(rngs[rank]["cuda"], torch.device(device))
    else:
        torch.set_rng_state(state["torch_rng"])
    resume = Resume(epoch=state["epoch"], batch=state.get("batch", 0), history=list(state["history"]))
    if resume.batch:
        resume.generator = state["generator"]
        sums = state["sums"]
        # per-rank sums; resumed with another number of processes, rank 0 carries them all
        resume.sums = tuple(sums[rank]) if len(sums) == world else (
            tuple(map(sum, zip(*sums))) if rank == 0 else (0.0, 0, 0))
    log.info("resumed from %s at epoch %d, batch %d", path, resume.epoch, resume.batch)
    return resume
