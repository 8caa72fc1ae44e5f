"""The one way artifacts reach the disk: a temporary file beside the target, fsync, then rename.

Readers never see a partial file, an interrupted write leaves the previous version (or nothing), and the
new file gets the permissions of an ordinary file under the user's umask (0644 under 022): `mkstemp`'s 0600
would make checkpoints and tables unreadable for the rest of a cluster project's group.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
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
    folder, which is fsynced, given mode 0666 & ~umask and renamed over `path`. Temporaries of `path` that a killed
    writer left are removed first (one job writes a file at a time: Snakemake locks the working directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temporaries(path):  # left by a writer of this file killed before its rename (SIGKILL)
        with contextlib.suppress(OSError):
            stale.unlink()
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


# ------------------------------------------------------------------------------- self-digests
# Every JSON and parquet artifact records the sha256 of its own content: a JSON file under SELF_DIGEST (the
# digest of its canonical text without that field), a parquet file in its schema metadata under
# b"advlayers_sha256" (the digest of its columns and its b"advlayers" metadata). Readers check it: a flipped bit or
# an edited number is a one-line ArtifactError naming the file, never a silently different number.

SELF_DIGEST = "self_sha256"
_PARQUET_DIGEST = b"advlayers_sha256"


class ArtifactError(ValueError):
    """An artifact that cannot be trusted: its content does not match its own digest, or it was made from a file
    that has changed since (one line naming the file; `advlayers verify` prints the rebuild command)."""


def json_digest(obj: dict) -> str:
    """sha256 of a JSON object's canonical text (sorted keys), its SELF_DIGEST field left out."""
    body = {k: v for k, v in obj.items() if k != SELF_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def write_json(path, obj, *, digest: bool = True) -> Path:
    """`obj` as JSON, with its own digest under SELF_DIGEST (unless `digest=False`)."""
    if digest:
        obj = json.loads(json.dumps(obj, default=str))  # the digest is of what a reader gets back
        obj[SELF_DIGEST] = json_digest(obj)
    return atomic_write(path, json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")


def read_json(path) -> dict:
    """A JSON artifact `write_json` wrote, its self-digest checked (ArtifactError if absent or not matching)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt: not readable JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(obj, dict) or SELF_DIGEST not in obj:
        raise ArtifactError(f"{path} records no digest of its own content (made by an older version?); rebuild it")
    if json_digest(obj) != obj[SELF_DIGEST]:
        raise ArtifactError(f"{path} is corrupt: its content does not match its recorded digest (edited or damaged)")
    return obj


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
    extra = {b"advlayers": json.dumps(metadata, default=str).encode()} if metadata is not None else {}
    extra[_PARQUET_DIGEST] = parquet_digest(arrow, extra.get(b"advlayers", b"")).encode()
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **extra})
    return atomic_write(path, lambda f: pq.write_table(arrow, f))


def parquet_digest(arrow, metadata: bytes = b"") -> str:
    """sha256 of a pyarrow table's column names, value types and values (as a reader gets them back: dictionary
    columns decoded, string types alike) and of its b"advlayers" metadata."""
    import numpy as np
    import pyarrow as pa

    h = hashlib.sha256(metadata + b"\0")
    for name, column in zip(arrow.column_names, arrow.columns):
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        # string / large_string and list<item: ...> / list<element: ...> hold the same values
        kind = re.sub(r"<\w+: ", "<", str(column.type)).replace("large_", "")
        h.update(f"{name}\0{kind}\0{len(column)}\0".encode())
        if (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type)) and column.null_count == 0:
            h.update(np.ascontiguousarray(column.to_numpy()).tobytes())
        else:
            h.update(json.dumps(column.to_pylist(), default=str).encode())
    return h.hexdigest()


def read_parquet_arrow(path):
    """A parquet artifact `write_parquet` wrote, as a pyarrow table, its self-digest checked (ArtifactError)."""
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except Exception as e:  # a damaged footer or page
        raise ArtifactError(f"{path} is corrupt: not readable parquet ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]})") from None
    meta = arrow.schema.metadata or {}
    if _PARQUET_DIGEST not in meta:
        raise ArtifactError(f"{path} records no digest of its own content (made by an older version?); rebuild it")
    if parquet_digest(arrow, meta.get(b"advlayers", b"")) != meta[_PARQUET_DIGEST].decode():
        raise ArtifactError(f"{path} is corrupt: its content does not match its recorded digest (edited or damaged)")
    return arrow


def read_parquet(path):
    """A parquet artifact as a pandas DataFrame, its self-digest checked (`read_parquet_arrow`)."""
    return read_parquet_arrow(path).to_pandas()


def read_table(path):
    """A table made from other artifacts (a result table, a per-net part) as a DataFrame: its self-digest checked,
    and every input its metadata records still the exact file it was made from (`check_sources`)."""
    arrow = read_parquet_arrow(path)
    raw = (arrow.schema.metadata or {}).get(b"advlayers")
    check_sources(path, (json.loads(raw) if raw else {}).get("inputs") or {})
    return arrow.to_pandas()


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


@functools.lru_cache(maxsize=4096)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def check_sources(path, inputs: dict) -> None:
    """ArtifactError unless every file `path` records as an input ({role: {"path", "sha256"}}, `file_digests`)
    is still the exact file it was made from. A recorded file that no longer exists is left to `advlayers verify`
    (and to the workflow, which rebuilds it and then `path`)."""
    for role, entry in sorted((inputs or {}).items()):
        if not isinstance(entry, dict) or "path" not in entry or not os.path.isfile(entry["path"]):
            continue
        st = os.stat(entry["path"])
        if _cached_sha256(str(entry["path"]), st.st_size, st.st_mtime_ns) != entry.get("sha256"):
            raise ArtifactError(f"{path} is stale: its input {entry['path']} ({role}) changed since it was made "
                                "from it (`advlayers verify` prints the rebuild command)")


def file_digests(paths: dict) -> dict:
    """{role: {"path", "sha256"}} of the files an artifact is made from (its recorded inputs)."""
    return {role: {"path": str(p), "sha256": sha256_file(p)} for role, p in paths.items()}
