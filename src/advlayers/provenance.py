"""Where and how an artifact was made: code version, library versions, device, precision, config, job.

Recorded in every checkpoint, evaluation record and table row, so that two rows that look alike but were
made from different recipes, code or hardware can be told apart.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

from . import __version__

REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool | None]:
    """(commit, dirty) of the checkout the library runs from; ('', None) outside a git checkout."""
    if not (REPO / ".git").exists():
        return "", None
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "", None
    return commit, bool(status) if commit else None


def config_digest(config: dict | None) -> str:
    if not config:
        return ""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def environment(device="cpu", *, precision: str | None = None, config: dict | None = None) -> dict:
    """Flat provenance record (strings, bools): advlayers_version, git_commit, git_dirty, torch_version,
    torchvision_version, cuda_version, device_name, precision, config_digest, slurm_job_id, host, created."""
    import torch

    from ._torchvision import GUARD_APPLIED, torchvision

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    device_name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    commit, dirty = git_state()
    return {
        "advlayers_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": str(torch.__version__),
        "torchvision_version": str(getattr(torchvision, "__version__", "")),
        "cuda_version": torch.version.cuda or "",
        "torchvision_guard": bool(GUARD_APPLIED),  # True only where torchvision's compiled ops cannot load
        "device_name": f"{device.type}: {device_name}",
        "precision": precision or "",
        "config_digest": config_digest(config),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "host": platform.node(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
