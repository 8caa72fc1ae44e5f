"""advlayers.io: atomic writes with ordinary file permissions, no partial files, and content digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat

import pandas as pd
import pytest
import torch

from advlayers.core.checkpoints import save_checkpoint
from advlayers.io import (
    SELF_DIGEST, ArtifactError, atomic_write, check_sources, file_digests, read_json, read_parquet,
    read_parquet_metadata, read_table, save_torch, sha256_file, stale_temporaries, state_digest, write_json,
    write_parquet,
)
from advlayers.core.models import build_model

from helpers import WIDTH


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _writers(tmp_path):
    model = build_model("resnet18", 10, 32, seed=0, width=WIDTH)
    return {
        "atomic_write bytes": lambda p: atomic_write(p, b"bytes"),
        "atomic_write text": lambda p: atomic_write(p, "text"),
        "atomic_write callable": lambda p: atomic_write(p, lambda f: f.write(b"called")),
        "save_torch": lambda p: save_torch(p, {"x": torch.zeros(2)}),
        "save_checkpoint": lambda p: save_checkpoint(p, model, dataset="digits", seed=0, epoch=1),
        "write_parquet": lambda p: write_parquet(p, pd.DataFrame({"a": [1, 2]}), metadata={"k": 1}),
        "write_json": lambda p: write_json(p, {"a": 1}),
    }


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_permissions_of_the_umask(tmp_path, mask, expected):
    """Not mkstemp's 0600: checkpoints and tables stay readable for the rest of a cluster project's group."""
    writers = _writers(tmp_path)
    with umask(mask):
        for name, write in writers.items():
            path = tmp_path / f"{name.replace(' ', '_')}.out"
            write(path)
            assert mode(path) == expected, f"{name}: {oct(mode(path))}"
            # overwriting keeps the umask's mode (and never the temporary file's)
            os.chmod(path, 0o600)
            write(path)
            assert mode(path) == expected, f"{name} (overwrite): {oct(mode(path))}"


def test_writes_leave_the_umask_unchanged(tmp_path):
    with umask(0o027):
        atomic_write(tmp_path / "a", b"x")
        assert os.umask(0o027) == 0o027  # atomic_write reads the umask without changing it
        assert mode(tmp_path / "a") == 0o640


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = tmp_path / "table.json"
    write_json(path, {"version": 1})

    def broken(f):
        f.write(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, broken)
    assert read_json(path)["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]
    assert stale_temporaries(path) == []
    # a first write that fails leaves nothing at all
    with pytest.raises(type(error)):
        atomic_write(tmp_path / "new.pt", broken)
    assert not (tmp_path / "new.pt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]


def test_atomic_write_creates_folders_and_returns_the_path(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    assert atomic_write(path, "hello") == path and path.read_text() == "hello"
    assert path.read_bytes() == b"hello"


def test_the_next_write_removes_a_killed_writers_temporary(tmp_path):
    """Issue 20 G: a SIGKILL between mkstemp and rename leaves a 0600 `.NAME.*.tmp`; the next write of NAME removes it
    (and leaves other files' temporaries alone)."""
    path = tmp_path / "fig.png"
    left = tmp_path / ".fig.png.abc123.tmp"
    other = tmp_path / ".other.png.abc123.tmp"
    left.write_bytes(b"partial")
    other.write_bytes(b"partial")
    atomic_write(path, b"png")
    assert path.read_bytes() == b"png" and not left.exists() and other.exists()


def test_stale_temporaries_are_found(tmp_path):
    path = tmp_path / "state.pt"
    assert stale_temporaries(tmp_path / "missing" / "state.pt") == []
    left = tmp_path / ".state.pt.x1y2.tmp"
    left.write_bytes(b"partial")
    (tmp_path / ".other.pt.x1y2.tmp").write_bytes(b"not ours")
    assert stale_temporaries(path) == [left]


def test_parquet_metadata_and_json_round_trip(tmp_path):
    df = pd.DataFrame({"cell": ["m110000", "l0-7"], "acc": [0.5, 0.25]})
    write_parquet(tmp_path / "t.parquet", df, metadata={"config": {"seeds": [0, 1]}})
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    assert read_parquet_metadata(tmp_path / "t.parquet") == {"config": {"seeds": [0, 1]}}
    write_parquet(tmp_path / "plain.parquet", df)
    assert read_parquet_metadata(tmp_path / "plain.parquet") == {}
    write_json(tmp_path / "r.json", {"path": tmp_path})  # non-JSON values as strings
    assert {k: v for k, v in read_json(tmp_path / "r.json").items() if k != SELF_DIGEST} == {"path": str(tmp_path)}


def _flip_number(path, old: bytes, new: bytes):
    raw = path.read_bytes()
    assert raw.count(old) >= 1
    path.write_bytes(raw.replace(old, new, 1))


def test_json_self_digest_catches_an_edit(tmp_path):
    """Issue 20 A: an evaluation record edited (robust_acc 0.367 -> 0.967) is corrupt, not a different number."""
    path = tmp_path / "e.json"
    write_json(path, {"records": [{"robust_acc": 0.367, "clean_acc": float("nan")}]})
    assert read_json(path)["records"][0]["robust_acc"] == 0.367
    _flip_number(path, b"0.367", b"0.967")
    with pytest.raises(ArtifactError, match=r"e.json is corrupt: its content does not match its recorded digest"):
        read_json(path)
    path.write_text(json.dumps({"records": []}))
    with pytest.raises(ArtifactError, match="records no digest of its own content"):
        read_json(path)
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="is corrupt: not readable JSON"):
        read_json(path)


@pytest.mark.parametrize("rows", [True, False])
def test_parquet_self_digest_catches_a_flipped_value(tmp_path, rows):
    """Issue 20 A: a flipped value in a parquet table (clean_acc 0.961 -> 0.992, a bool outcome) is caught; a
    DataFrame and a list of rows round-trip to the same digest whatever their types."""
    df = pd.DataFrame({"cell": ["m110000", "l0-7", None], "clean_acc": [0.961, 0.5, float("nan")],
                       "n": [1, 2, 3], "correct": [True, False, True]})
    df["cat"] = pd.Categorical(["a", "b", "a"])
    df["modules"] = [[], ["m0"], ["m0", "m1"]]  # list<item> written, list<element> read back
    path = tmp_path / "t.parquet"
    as_rows = [{"cell": c, "clean_acc": a, "n": n, "correct": b} for c, a, n, b in
               zip(["m110000", "l0-7", None], [0.961, 0.5, float("nan")], [1, 2, 3], [True, False, True])]
    write_parquet(path, as_rows if rows else df, metadata={"inputs": {}})
    assert read_parquet(path)["clean_acc"].iloc[0] == 0.961
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    values = table.column("clean_acc").to_pylist()
    values[0] = 0.992
    flipped = table.set_column(table.column_names.index("clean_acc"), "clean_acc",
                               __import__("pyarrow").array(values))
    pq.write_table(flipped.replace_schema_metadata(table.schema.metadata), path)  # digest kept, a value changed
    with pytest.raises(ArtifactError, match="t.parquet is corrupt: its content does not match"):
        read_parquet(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="t.parquet is corrupt: not readable parquet"):
        read_parquet(path)


def test_a_table_made_from_a_changed_file_is_stale(tmp_path):
    """Issue 20 A/B: a consumer refuses a table whose recorded input is no longer the exact file it was made from."""
    part = tmp_path / "part.json"
    write_json(part, {"records": [1]})
    table = tmp_path / "t.parquet"
    write_parquet(table, [{"a": 1}], metadata={"inputs": file_digests({str(part): part})})
    assert read_table(table)["a"].tolist() == [1]
    write_json(part, {"records": [2]})
    with pytest.raises(ArtifactError, match=rf"t.parquet is stale: its input {part} .* changed since"):
        read_table(table)
    with pytest.raises(ArtifactError, match="changed since"):
        check_sources("x", file_digests({"p": part}) | {"q": {"path": str(part), "sha256": "0" * 64}})


def test_file_digests(tmp_path):
    (tmp_path / "data.pt").write_bytes(b"some bytes")
    assert sha256_file(tmp_path / "data.pt") == hashlib.sha256(b"some bytes").hexdigest()
    assert file_digests({"data": tmp_path / "data.pt"}) == {
        "data": {"path": str(tmp_path / "data.pt"), "sha256": hashlib.sha256(b"some bytes").hexdigest()}}


def test_state_digest_is_a_content_hash():
    a = build_model("resnet18", 10, 32, seed=0, width=WIDTH).state_dict()
    b = build_model("resnet18", 10, 32, seed=0, width=WIDTH).state_dict()
    assert all(x.data_ptr() != y.data_ptr() for x, y in zip(a.values(), b.values()))
    digest = state_digest(a)
    assert digest == state_digest(b) and len(digest) == 64
    assert state_digest(dict(reversed(list(a.items())))) == digest  # key order does not matter
    # the memory layout does not matter (a channels_last net has the same weights)
    assert state_digest({k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v
                         for k, v in a.items()}) == digest
    # one changed value, one bit, a renamed key, another dtype or shape: another digest
    changed = {k: v.clone() for k, v in a.items()}
    changed["m2.0.conv1.weight"][0, 0, 0, 0] += 1e-3
    assert state_digest(changed) != digest
    flipped = {k: v.clone() for k, v in a.items()}
    flipped["m5.2.bias"].view(torch.int32)[0] ^= 1
    assert state_digest(flipped) != digest
    renamed = dict(a)
    renamed["m5.2.other"] = renamed.pop("m5.2.bias")
    assert state_digest(renamed) != digest
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in a.items()}
    assert state_digest(as_double) != digest
    reshaped = dict(a)
    reshaped["m5.2.weight"] = a["m5.2.weight"].reshape(-1)
    assert state_digest(reshaped) != digest
    assert state_digest({"x": torch.zeros(0)}) != state_digest({"x": torch.zeros(0, 1)})
