"""Cost of the parquet self-digest (issue 20) at paper scale: the `outcomes` table of config/paper.yaml.

    PYTHONPATH=src python benchmarks/digest_cost.py [--configfile config/paper.yaml] [--repeats 3] [--scale 1.0]

Rows: the outcome table has one row per evaluated net (every cell of every setting, and the pretrained nets:
`grid.plan.evaluation_units`) and per test image it is evaluated on (eval `n: null` = the confirmation part,
the test split minus its T tuning images: `vocabulary.TEST_SIZES`, `tuning_size`). The table is synthetic with
the real columns and types (`jobs.evaluate`: 7 identity columns, test_index, two booleans) and random outcomes.

Times, median of --repeats, wall seconds and CPU seconds of this process:
  write   `io.write_parquet` (digest computed and stored)  vs  the same pyarrow table written without it
  read    `io.read_parquet_arrow` (read + digest checked)    vs  `pyarrow.parquet.read_table` alone
and the ratio with / without. No GPU; nothing under results/ is touched (a temporary folder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from advlayers.grid import plan, validate  # noqa: E402
from advlayers.grid.vocabulary import TEST_SIZES, tuning_size  # noqa: E402


def paper_rows(config: dict) -> list[tuple[object, str, int]]:
    """(setting, cell, images) of every net the outcome table holds."""
    out = []
    for s in plan.settings(config):
        n = TEST_SIZES[s.dataset] - tuning_size(s.dataset, TEST_SIZES[s.dataset])
        out += [(s, cell, n) for members in plan.evaluation_units(config, s).values() for cell in members]
    return out


def outcome_table(nets, scale: float = 1.0, seed: int = 0):
    """The synthetic outcome table (pyarrow), columns and types as `jobs.evaluate` writes them."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("dataset", "arch", "seed", "pretraining", "cell", "attack",
                                              "image_part", "test_index")}
    for s, cell, n in nets:
        n = max(1, int(n * scale))
        for key, value in (("dataset", s.dataset), ("arch", s.arch), ("seed", s.seed), ("pretraining", s.pretraining),
                           ("cell", cell), ("attack", "PGD-200"), ("image_part", "confirmation")):
            cols[key].append(np.full(n, value, dtype=object if isinstance(value, str) else np.int64))
        cols["test_index"].append(rng.permutation(n).astype(np.int64))
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    rows = len(arrays["test_index"])
    clean = rng.random(rows) < 0.9
    arrays["clean_correct"], arrays["robust_correct"] = clean, clean & (rng.random(rows) < 0.5)
    return pa.table({k: pa.array(v) for k, v in arrays.items()})


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def measure(table, folder: Path, repeats: int) -> dict[str, tuple[float, float]]:
    import json

    import pyarrow.parquet as pq

    from advlayers.io import atomic_write, read_parquet_arrow, write_parquet

    with_digest, plain = folder / "with.parquet", folder / "plain.parquet"
    metadata = {"inputs": {f"results/evaluations/part{i}.outcomes.parquet": {"sha256": "0" * 64} for i in range(350)}}
    frame = table.to_pandas()  # what the table job hands to write_parquet

    def write_plain():
        import pyarrow as pa

        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                               b"advlayers": json.dumps(metadata).encode()})
        atomic_write(plain, lambda f: pq.write_table(arrow, f))

    runs = {"write with digest": lambda: write_parquet(with_digest, frame, metadata), "write without": write_plain,
            "read + verify digest": lambda: read_parquet_arrow(with_digest), "read without": lambda: pq.read_table(plain)}
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configfile", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each net's images (tests: small)")
    args = parser.parse_args(argv)
    nets = paper_rows(validate.load(args.configfile, roots=False))
    table = outcome_table(nets, args.scale)
    print(f"{args.configfile}: {len(nets)} evaluated nets, {table.num_rows:,} outcome rows (x{args.scale:g})")
    with tempfile.TemporaryDirectory() as tmp:
        t = measure(table, Path(tmp), args.repeats)
        size = (Path(tmp) / "with.parquet").stat().st_size
    print(f"file: {size / 2**20:.1f} MiB; median of {args.repeats}")
    print("| step | wall s | CPU s |")
    print("| --- | ---: | ---: |")
    for name, (w, c) in t.items():
        print(f"| {name} | {w:.2f} | {c:.2f} |")
    for step, a, b in (("write", "write with digest", "write without"), ("read", "read + verify digest", "read without")):
        print(f"{step}: with/without digest = {t[a][0] / t[b][0]:.2f}x wall, {t[a][1] / t[b][1]:.2f}x CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
