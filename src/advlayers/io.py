"""The one way artifacts reach the disk: a temporary file beside the target, fsync, then rename.

Readers never see a partial file, an interrupted write leaves the previous version (or nothing), and the
new file gets the permissions of an ordinary file under the user's umask (0644 under 022): `mkstemp`'s 0600
would make checkpoints and tables unreadable for the rest of a cluster project's group.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None] | bytes | str) -> Path:
    """Write `path` atomically: `write(file)` (or the given bytes/text) goes to a temporary file in the same
    folder, which is fsynced, given mode 0666 & ~umask and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files of `atomic_write` left beside `path` by a process killed (SIGKILL) while writing."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def write_json(path, obj) -> Path:
    return atomic_write(path, json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")


def save_torch(path, obj) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def write_parquet(path, table, metadata: dict | None = None) -> Path:
    """A DataFrame, or a non-empty list of row dicts (jobs that need no pandas: importing it costs each job
    ~0.3 CPU-s), as parquet; `metadata` (JSON-able) goes into the file's schema metadata under b'advlayers'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, list):
        if not table:
            raise ValueError(f"no rows to write to {path}")
        arrow = pa.Table.from_pylist(table)
    else:
        arrow = pa.Table.from_pandas(table, preserve_index=False)
    if metadata is not None:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               b"advlayers": json.dumps(metadata, default=str).encode()})
    return atomic_write(path, lambda f: pq.write_table(arrow, f))


def read_parquet_metadata(path) -> dict:
    """The b'advlayers' metadata `write_parquet` stored ({} if none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"advlayers")
    return json.loads(raw) if raw else {}


def sha256_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def state_digest(state: dict) -> str:
    """Content hash of a state dict (names, dtypes, shapes and bytes of every tensor, on the CPU): the same weights
    give the same digest wherever they were saved."""
    import torch

    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous()
            h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{key}\0{value!r}\0".encode())
    return h.hexdigest()


def file_digests(paths: dict) -> dict:
    """{role: {"path", "sha256"}} of the files an artifact is made from (its recorded inputs)."""
    return {role: {"path": str(p), "sha256": sha256_file(p)} for role, p in paths.items()}
