"""Fault corpus: what a hostile but fair user can do to a run, and what they see.

Each case damages a private copy of the tiny run (conftest `tiny_run`, `copy_of`) or calls an entry point with
bad input, and asserts either a one-line error (no Python traceback where the entry point is the `advlayers`
command or Snakemake's report) or the correct recovered result, and that nothing finished was lost.

The silent cases of "no silent wrong result":
  1. a stale resume state must not override a new pretrained net (the state's fingerprint covers the weights
     the run started from);
  2. a swapped checkpoint of the same arch is refused by the evaluation, and a table refuses duplicate keys;
  3. a failed evaluation is not masked on the next run (the table rule's rebuild marker,
     `advlayers.verify.table_rebuild_marker`);
and after the command `advlayers verify` prints, the tables are right again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from advlayers.tools import cli
from advlayers.grid import conf, layout, validate, vocabulary as vocab
from advlayers.grid.vocabulary import Setting
from advlayers.core.attacks import AttackSpec, pgd
from advlayers.core.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from advlayers.io import state_digest
from advlayers.core.models import build_model
from advlayers.core.recipes import get_recipe
from advlayers.tools.verify import main as verify_main
from advlayers.tools.verify import verify

from helpers import REPO, TARGETS, copy_of, dry_run, snakemake

SRC = REPO / "src"
CONFIG = ("--configfile", "tiny.yaml")
CONV, ADV = (Setting("digits", "resnet18", 0, p) for p in vocab.PRETRAININGS)
CUTOFF = layout.table_path("cutoff")
DATA = layout.data_path("digits")
KEY = ["pretraining", "direction", "cutoff"]
NUMBERS = ["cell", "clean_acc", "robust_acc", "checkpoint_digest"]


# --------------------------------------------------------------------------- helpers


def library_env() -> dict:
    """The environment of a subprocess that runs this checkout's library, one thread."""
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))


def assert_one_line(text: str, *words) -> str:
    """The single non-empty line of `text` (no traceback) containing every word."""
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text[-3000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def flip_byte(path: Path, where: float = 0.5) -> None:
    """Flip one byte (bit rot), keeping the file's modification time (Snakemake cannot see it)."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under results/ except the rebuild markers."""
    results = root / "results"
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in results.rglob("*")
            if p.is_file() and ".rebuild" not in p.parts}


def results_copy(tiny_run: Path, dst: Path) -> Path:
    """Only the results of the tiny run (what `verify` reads): faster than a whole copy."""
    shutil.copytree(tiny_run / "results", dst / "results", symlinks=True)
    return dst


def cutoff_numbers(root: Path) -> pd.DataFrame:
    table = pd.read_parquet(root / CUTOFF)
    return table[KEY + NUMBERS].sort_values(KEY, key=lambda s: s.astype(str)).reset_index(drop=True)


def cell_file(s: Setting, cell: str) -> str:
    """A retrained cell of the tiny run (one cell per retraining group: the group's id is the cell's)."""
    return layout.cell_path(s, cell, cell)


def records(s: Setting, unit: str) -> str:
    return layout.evaluation_paths(s, unit)[0]


def outcomes(s: Setting, unit: str) -> str:
    return layout.evaluation_paths(s, unit)[1]


def eval_log(root: Path, records_path: str) -> str:
    fields = layout.parse(records_path)[1]
    return (root / layout.log_path("evaluate", f"{layout.job_id(layout.setting_of(fields))}/{fields['unit']}")).read_text()


def one_problem(problems, path: str, kind: str | None = None):
    found = [p for p in problems if p.path == path]
    assert found, [p.path for p in problems]
    if kind:
        assert found[0].kind == kind, found[0]
    return found[0]


# --------------------------------------------------------------------------- the silent cases, end to end
# One copy of the tiny run takes all three damages; the same runs show each fault loud, then the recovery.
#   conventional m100000: its checkpoint rots (a flipped byte, mtime kept), and a resume state made from the
#       ADVERSARIAL pretrained net waits at its state path (a stale state after a pretraining change);
#   adversarial m000011: its checkpoint is swapped for the conventional net's cell of the same name and arch.
# While the recovery runs, a second Snakemake on the same folder is refused by the lock.

ROT = layout.group_dir(CONV, "m100000")
SWAP = layout.group_dir(ADV, "m000011")
STALE_STATE = layout.retrain_state(CONV, "m100000")
FORCED = [records(CONV, "retrained_m100000"), records(ADV, "retrained_m000011")]


def _plant_stale_state(root: Path) -> None:
    """A complete resume state of the conventional m100000 cell, trained from the other pretrained net."""
    from advlayers.core.datasets import load_prepared
    from advlayers.core.epoch_eval import epoch_evaluator
    from advlayers.jobs.retrain import retrain_cell

    config = yaml.safe_load((root / "tiny.yaml").read_text())
    other, _ = load_checkpoint(root / layout.pretrained_path(ADV))
    data, recipe = load_prepared(root / DATA), conf.recipe_params(config, "digits", retrain=True)
    # the same run as the workflow's but for its start (the per-epoch evaluation of tests/tiny.yaml included)
    retrain_cell(other, data, "m100000", setting=CONV, recipe=recipe, device="cpu", state_path=root / STALE_STATE,
                 out=root / "stale_cell.pt", inputs={"data": root / DATA},
                 epoch_eval=epoch_evaluator(data, "digits", recipe.get("epoch_eval")))
    assert (root / STALE_STATE).is_file()


def _eval_logs(root: Path) -> dict[str, str]:
    return {f: eval_log(root, f) for f in FORCED}


def _verify_in_process(root: Path, *args) -> tuple[int, str]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = verify_main(["--root", str(root), *args])
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def silent(tiny_run, tmp_path_factory):
    """The damaged copy and what each step showed: `snakemake verify`, the forced evaluations, the next plain
    run, verify again, its recovery command (raced by a second Snakemake), `snakemake verify` and a dry run."""
    root = copy_of(tiny_run, tmp_path_factory.mktemp("silent") / "run")
    steps = {"before": cutoff_numbers(root)}
    flip_byte(root / ROT / "m100000.pt")
    swapped = root / SWAP / "m000011.pt"
    st = swapped.stat()
    shutil.copyfile(root / cell_file(CONV, "m000011"), swapped)
    os.utime(swapped, ns=(st.st_atime_ns, st.st_mtime_ns))
    _plant_stale_state(root)
    steps["dry_before"] = dry_run(root, *TARGETS, *CONFIG)
    steps["verify1"] = snakemake(root, "verify", "--cores", "1", *CONFIG, check=False)
    # what a changed evaluation setting (or `--forcerun`) does: the two evaluations run again, and fail
    steps["forced"] = snakemake(root, *TARGETS, "--cores", "2", *CONFIG, "-k", "--forcerun", *FORCED, check=False)
    steps["forced_logs"] = _eval_logs(root)
    steps["gone_after_failure"] = [f for f in FORCED if not (root / f).exists()]
    steps["tables_after_failure"] = cutoff_numbers(root)
    steps["again"] = snakemake(root, *TARGETS, "--cores", "2", *CONFIG, "-k", check=False)
    steps["again_logs"] = _eval_logs(root)
    steps["marker"] = (root / layout.path("rebuild_marker", table="cutoff")).read_text()
    steps["verify2"] = _verify_in_process(root, "--configfile", "tiny.yaml")
    command = shlex.split(steps["verify2"][1].strip().splitlines()[-1].rsplit(": ", 1)[1])
    assert command[:2] == ["snakemake", "--cores"], command
    steps["command"] = command
    recovery = subprocess.Popen([sys.executable, "-m", *command], cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    locks, deadline = root / ".snakemake" / "locks", time.monotonic() + 300
    while not (locks.is_dir() and any(locks.iterdir())) and recovery.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # the recovery holds the lock: pause it there, so the second run meets the lock whatever the timing
    steps["raced"] = recovery.poll() is None
    if steps["raced"]:
        recovery.send_signal(signal.SIGSTOP)
    try:
        steps["second"] = snakemake(root, *TARGETS, "--cores", "1", *CONFIG, check=False)
    finally:
        recovery.send_signal(signal.SIGCONT)
    steps["recovery"] = (recovery.wait(timeout=900), recovery.stdout.read())
    steps["verify3"] = snakemake(root, "verify", "--cores", "1", *CONFIG, check=False)
    steps["dry_after"] = dry_run(root, *TARGETS, *CONFIG)
    return root, steps


@pytest.mark.slow
def test_silent_damage_is_invisible_to_snakemake_but_named_by_verify(silent):
    root, steps = silent
    assert steps["dry_before"] == {}  # Snakemake sees no change: a rotten or swapped file keeps its date
    rc, out = steps["verify1"]
    assert rc != 0 and "Error in rule verify" in out and "Traceback" not in out
    lines = {line.split(": ", 1)[0]: line for line in out.splitlines() if line.startswith("results/")}
    assert set(lines) == {f"{ROT}/m100000.pt", f"{SWAP}/m000011.pt"}, out[-3000:]
    rot, swap = lines[f"{ROT}/m100000.pt"], lines[f"{SWAP}/m000011.pt"]
    assert rot.startswith(f"{ROT}/m100000.pt: corrupt: ") and "do not match their recorded digest" in rot
    # the run's --cores and --configfile (`snakemake verify --cores 1 --configfile tiny.yaml`)
    assert rot.endswith(f"rebuild: snakemake --cores 1 all_figures --configfile tiny.yaml --forcerun {ROT}")
    assert swap.startswith(f"{SWAP}/m000011.pt: swapped: holds pretraining='conventional'")
    assert swap.endswith(f"--forcerun {SWAP}")


@pytest.mark.slow
def test_swapped_checkpoint_of_same_arch_is_refused_by_the_evaluation(silent):
    """Item 2: the evaluation checks each checkpoint against the net its job is for."""
    root, steps = silent
    rc, out = steps["forced"]
    assert rc != 0 and out.count("Error in rule evaluate") == 2 and "Traceback" not in out
    logs = steps["forced_logs"]
    assert "has pretraining='conventional', expected 'adversarial'" in logs[records(ADV, "retrained_m000011")]
    assert "is corrupt: its weights do not match their recorded digest" in logs[records(CONV, "retrained_m100000")]
    assert steps["gone_after_failure"] == FORCED  # Snakemake deleted the failed jobs' outputs


@pytest.mark.slow
def test_failed_evaluation_is_not_masked_on_the_next_run(silent):
    """Item 3: with the failed jobs' outputs gone, the next run must not say "Nothing to be done" and keep the
    old table: it runs the evaluations again (and fails again, loudly)."""
    root, steps = silent
    rc, out = steps["again"]
    assert rc != 0 and "Nothing to be done" not in out, out[-3000:]
    assert out.count("Error in rule evaluate") == 2, out[-3000:]
    again = steps["again_logs"][records(ADV, "retrained_m000011")]
    assert "has pretraining='conventional', expected 'adversarial'" in again
    assert all(f in steps["marker"] for f in FORCED)  # why the table job is back: its rebuild marker
    # nothing finished was lost: the old table stays until it can be rebuilt
    pd.testing.assert_frame_equal(steps["tables_after_failure"], steps["before"])


@pytest.mark.slow
def test_verify_names_the_missing_evaluations_and_one_command(silent):
    root, steps = silent
    rc, out = steps["verify2"]
    assert rc == 1
    assert f"{records(CONV, 'retrained_m100000')}: missing: " in out
    command = steps["command"]
    assert command[:6] == ["snakemake", "--cores", "all", "all_figures", "--configfile", "tiny.yaml"]
    assert {ROT, SWAP, *FORCED} <= set(command[command.index("--forcerun") + 1:])


@pytest.mark.slow
def test_second_snakemake_on_the_same_directory_is_refused(silent):
    root, steps = silent
    assert steps["raced"], "the recovery ended before it could be raced"
    rc, out = steps["second"]
    assert rc != 0 and "cannot be locked" in out and "--unlock" in out and "Traceback" not in out, out[-2000:]


@pytest.mark.slow
def test_recovery_command_restores_the_table(silent):
    root, steps = silent
    rc, out = steps["recovery"]
    assert rc == 0, out[-3000:]
    pd.testing.assert_frame_equal(cutoff_numbers(root), steps["before"])  # the same nets, the same numbers
    rc, out = steps["verify3"]
    assert rc == 0 and re.search(r"^verified \d+ artifacts: all consistent$", out, re.M), out[-3000:]
    assert steps["dry_after"] == {}  # no rerun loop


@pytest.mark.slow
def test_stale_resume_state_after_a_pretraining_change_is_discarded(silent):
    """Item 1: the state made from the other pretrained net was not resumed (it would have saved that net's
    retrained weights under this cell's name); the cell was retrained from its own pretrained net."""
    root, steps = silent
    log = (root / layout.log_path("retrain", f"{layout.job_id(CONV)}_then_adversarial/m100000")).read_text()
    assert f"discarding training state {STALE_STATE}: it belongs to another run (differs in start)" in log
    before = steps["before"]
    original = before[(before["pretraining"] == "conventional") & (before["cell"] == "m100000")]
    assert read_checkpoint(root / ROT / "m100000.pt")["digest"] == original["checkpoint_digest"].iloc[0]
    assert not (root / STALE_STATE).exists()


# --------------------------------------------------------------------------- more damage through the workflow


@pytest.mark.slow
def test_swapped_evaluation_file_is_refused_by_the_table(tiny_run, tmp_path):
    """Item 2, tables: an evaluation file copied over another's is a duplicate key, not a row (the failed
    table job's output is removed: no table rather than a wrong one)."""
    root = copy_of(tiny_run, tmp_path / "run")
    shutil.copyfile(root / records(CONV, "retrained_m100000"), root / records(CONV, "retrained_m000011"))
    rc, out = snakemake(root, *TARGETS, "--cores", "2", *CONFIG, check=False)
    assert rc != 0 and "Error in rule table" in out and "Traceback" not in out
    assert "rows share the key" in (root / layout.log_path("table", "cutoff")).read_text()
    assert not (root / CUTOFF).exists()
    assert one_problem(verify(root), records(CONV, "retrained_m000011"), "swapped")


@pytest.mark.slow
def test_deleted_evaluation_and_batch_rerun_only_what_is_missing(tiny_run, tmp_path):
    """A deleted evaluation reruns it and the tables; a deleted batch folder under an existing evaluation
    reruns the retraining, its evaluation and the tables. A dry run changes nothing but the rebuild marker."""
    root = copy_of(tiny_run, tmp_path / "run")
    (root / records(ADV, "pretrained")).unlink()
    shutil.rmtree(root / layout.group_dir(ADV, "m100000"))
    before = snapshot(root)
    jobs = dry_run(root, *TARGETS, *CONFIG)
    assert snapshot(root) == before
    assert set(jobs) == {"retrain", "evaluate", "table", "figure", "claims", "all_figures"}
    assert jobs["retrain"] == [layout.group_dir(ADV, "m100000")]
    assert sorted(jobs["evaluate"]) == sorted([*layout.evaluation_paths(ADV, "pretrained"),
                                               *layout.evaluation_paths(ADV, "retrained_m100000")])
    paths = {p.path: p for p in verify(root)}
    assert paths[records(ADV, "pretrained")].kind == "missing"
    assert paths[cell_file(ADV, "m100000")].target == layout.group_dir(ADV, "m100000")


# --------------------------------------------------------------------------- verify: each damage named


def _nan_weights(root):
    path = root / cell_file(ADV, "m000011")
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name].view(-1)[0] = float("nan")
    payload["digest"] = state_digest(payload["model"])  # only the NaN is wrong
    torch.save(payload, path)
    return cell_file(ADV, "m000011"), "corrupt", "NaN/Inf", layout.group_dir(ADV, "m000011")


def _other_arch(root):
    path = root / layout.pretrained_path(CONV)
    save_checkpoint(path, build_model("vgg11_bn", 10, 32, seed=0, width=0.25), dataset="digits", seed=0, epoch=1,
                    pretraining="conventional", retraining="none", cell="pretrained", retrained_modules=[])
    return layout.pretrained_path(CONV), "swapped", "arch='vgg11_bn'", None


def _other_dataset(root):
    path = root / layout.pretrained_path(ADV)
    payload = torch.load(path, weights_only=True)
    payload["dataset"] = "mnist5k"
    torch.save(payload, path)
    return layout.pretrained_path(ADV), "swapped", "dataset='mnist5k'", None


def _swapped_pretrained(root):
    shutil.copy2(root / layout.pretrained_path(CONV), root / layout.pretrained_path(ADV))
    return layout.pretrained_path(ADV), "swapped", "pretraining='conventional'", None


def _truncated(root):
    path = root / layout.initial_path(ADV)
    path.write_bytes(path.read_bytes()[:1000])
    return layout.initial_path(ADV), "corrupt", "corrupt or not an advlayers checkpoint", None


def _flipped(root):
    flip_byte(root / layout.pretrained_path(CONV))
    return layout.pretrained_path(CONV), "corrupt", "recorded digest", None


def _deleted_evaluation(root):
    (root / records(CONV, "pretrained")).unlink()
    return records(CONV, "pretrained"), "missing", CUTOFF, None


def _tampered_record(root):
    """Issue 20 A: an evaluation edited by hand (robust_acc changed, the file otherwise valid) is itself corrupt."""
    path = root / records(CONV, "pretrained")
    data = json.loads(path.read_text())
    data["records"][0]["robust_acc"] = 0.99
    path.write_text(json.dumps(data))
    return records(CONV, "pretrained"), "corrupt", "does not match its recorded digest", None


def _corrupt_table(root):
    path = root / CUTOFF
    path.write_bytes(path.read_bytes()[:500])
    return CUTOFF, "corrupt", "not readable parquet", None


def _rewrite_parquet_value(path: Path, column: str, change) -> None:
    """A value of a parquet artifact changed in place (its metadata, recorded digest included, kept; mtime kept):
    what a flipped bit in a data page does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    st = path.stat()
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[0] = change(values[0])
    table = table.set_column(table.column_names.index(column), column, pa.array(values, table.schema.field(column).type))
    pq.write_table(table, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _flipped_table_value(root):
    """Issue 20 A: clean_acc 0.96 -> 0.99 in the cut-off table (a bit flip; verify used to bless it)."""
    _rewrite_parquet_value(root / CUTOFF, "clean_acc", lambda v: min(1.0, v + 0.03))
    return CUTOFF, "corrupt", "does not match its recorded digest", None


def _flipped_outcome(root):
    _rewrite_parquet_value(root / outcomes(CONV, "pretrained"), "robust_correct", lambda v: not v)
    return outcomes(CONV, "pretrained"), "corrupt", "does not match its recorded digest", None


def _stale_cell(root):
    """Issue 20 B: a cell checkpoint of the right identity made from another pretrained net (its recorded input
    is not the pretrained file beside it)."""
    path = root / cell_file(CONV, "m100000")
    payload = torch.load(path, weights_only=True)
    payload["inputs"]["pretrained"]["sha256"] = "0" * 64
    torch.save(payload, path)
    return cell_file(CONV, "m100000"), "stale", "changed since", layout.group_dir(CONV, "m100000")


def _swapped_outcomes(root):
    shutil.copyfile(root / outcomes(CONV, "pretrained"), root / outcomes(ADV, "pretrained"))
    return outcomes(ADV, "pretrained"), None, "", None


def _changed_data(root):
    flip_byte(root / DATA, 0.6)
    return DATA, None, "", None


def _deleted_batch(root):
    shutil.rmtree(root / layout.group_dir(CONV, "m000011"))
    return cell_file(CONV, "m000011"), "missing", "", layout.group_dir(CONV, "m000011")


DAMAGES = [_flipped, _truncated, _nan_weights, _swapped_pretrained, _other_arch, _other_dataset,
           _deleted_evaluation, _tampered_record, _corrupt_table, _swapped_outcomes, _changed_data, _deleted_batch,
           _flipped_table_value, _flipped_outcome, _stale_cell]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__.strip("_") for d in DAMAGES])
def test_verify_names_each_damage(tiny_run, tmp_path, damage):
    root = results_copy(tiny_run, tmp_path)
    path, kind, words, target = damage(root)
    problem = one_problem(verify(root), path, kind)
    assert words in problem.detail, problem
    assert problem.target == (target or path)
    assert problem.command == f"snakemake --cores all all_figures --forcerun {problem.target}"


def test_stale_cell_of_the_right_identity_is_refused_by_its_consumers(tiny_run, tmp_path, monkeypatch):
    """Issue 20 B: the evaluation (and every job that loads a checkpoint for the workflow) refuses a checkpoint whose
    recorded inputs are not the files beside it, with one line naming it; `advlayers eval` on it alone still works."""
    root = results_copy(tiny_run, tmp_path)
    path = _stale_cell(root)[0]
    monkeypatch.chdir(root)  # recorded paths are relative to the working directory
    load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"^checkpoint {path} is stale: its input .*pretrained.pt \(pretrained\) "
                       "changed since it was made from it") as e:
        load_checkpoint(path, sources=True)
    assert "\n" not in str(e.value)


def test_damaged_table_is_refused_by_claims_and_figures(tiny_run, tmp_path, monkeypatch):
    """Issue 20 A: a flipped value in a table never reaches a verdict: the claims job refuses it (one line)."""
    from advlayers.io import ArtifactError
    from advlayers.report.claims import check_claims

    root = results_copy(tiny_run, tmp_path)
    _flipped_table_value(root)
    monkeypatch.chdir(root)
    with pytest.raises(ArtifactError, match=f"^{CUTOFF} is corrupt: its content does not match its recorded digest"):
        check_claims({"cutoff": CUTOFF, "outcomes": layout.table_path("outcomes")})


def test_verify_cli_clean_json_and_each_file_hashed_once(tiny_run, tmp_path, monkeypatch, capsys):
    root = results_copy(tiny_run, tmp_path)
    import advlayers.io

    calls = []
    real = advlayers.io.sha256_file
    monkeypatch.setattr(advlayers.io, "sha256_file", lambda p, *a: calls.append(Path(p).resolve()) or real(p, *a))
    assert cli.main(["verify", "--root", str(root)]) == 0
    out = capsys.readouterr()
    assert re.fullmatch(r"verified \d+ artifacts: all consistent\n", out.out) and not out.err
    assert calls and len(calls) == len(set(calls))  # data, checkpoints, evaluations: once each
    _flipped(root)
    assert verify_main(["--root", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["consistent"] and report["problems"][0]["path"] == layout.pretrained_path(CONV)
    assert report["command"].startswith("snakemake --cores all all_figures --forcerun ")
    assert cli.main(["verify", "--root", str(tmp_path / "nowhere")]) == 2
    assert_one_line(capsys.readouterr().err, "advlayers: error:", "nothing to verify")


# --------------------------------------------------------------------------- one-line errors of the library


@pytest.mark.parametrize("damage", [_flipped, _truncated, _nan_weights], ids=["flipped", "truncated", "nan"])
def test_eval_command_on_a_damaged_checkpoint_is_one_line(tiny_run, tmp_path, damage, capsys):
    root = results_copy(tiny_run, tmp_path)
    path, _, words, _ = damage(root)
    rc = cli.main(["eval", str(root / path), "--data", "digits", "--eps", "8/255", "--steps", "1", "--n", "8"])
    assert rc == 2
    assert_one_line(capsys.readouterr().err, "advlayers: error: checkpoint", words)


def test_checkpoint_of_another_arch_or_dataset_is_refused(tiny_run, tmp_path, capsys):
    root = results_copy(tiny_run, tmp_path)
    for damage, kwargs, words in ((_other_arch, {"arch": "resnet18"}, "has arch='vgg11_bn', expected 'resnet18'"),
                                  (_other_dataset, {"dataset": "digits"}, "has dataset='mnist5k', expected 'digits'")):
        path, *_ = damage(root)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(root / path, **kwargs)
        assert_one_line(str(e.value), words)
    # a net of another shape than the data: the command says so
    save_checkpoint(tmp_path / "c100.pt", build_model("resnet18", 100, 32, width=0.25), dataset="cifar100", seed=0,
                    epoch=1, pretraining="conventional", retraining="none", cell="pretrained", retrained_modules=[])
    assert cli.main(["eval", str(tmp_path / "c100.pt"), "--data", str(root / DATA),
                     "--eps", "8/255", "--steps", "1", "--n", "8"]) == 2
    assert_one_line(capsys.readouterr().err, "has 100 classes, dataset digits has 10")


ARGUMENT_ERRORS = [
    ("eps='8/255'", lambda: AttackSpec("8/255", 2 / 255, 10), "eps"),
    ("epochs=1.5", lambda: get_recipe("mnist5k-demo", epochs=1.5), "epochs"),
    ("steps=True", lambda: AttackSpec(8 / 255, 2 / 255, True), "steps"),
    ("batch_size='64'", lambda: get_recipe("mnist5k-demo", batch_size="64"), "batch_size"),
]


@pytest.mark.parametrize("what, call, word", ARGUMENT_ERRORS, ids=[a[0] for a in ARGUMENT_ERRORS])
def test_library_argument_errors(what, call, word):
    with pytest.raises(ValueError) as e:
        call()
    assert_one_line(str(e.value), word)


@pytest.fixture(scope="module")
def narrow_net():
    return build_model("resnet18", 10, 32, seed=0, width=0.25).eval()


@pytest.mark.parametrize("kwargs, word", [({"n": 0}, "n (test images"), ({"n": -5}, "n (test images"),
                                          ({"n": 8, "batch_size": "64"}, "batch_size")],
                         ids=["n=0", "n=-5", "eval-batch_size='64'"])
def test_evaluation_argument_errors(digits, narrow_net, kwargs, word):
    from advlayers.core.evaluation import evaluate

    with pytest.raises(ValueError) as e:
        evaluate(narrow_net, digits.test, AttackSpec(0.1, 0.04, 1), progress=False, **kwargs)
    assert_one_line(str(e.value), word)


def test_images_in_0_255_are_refused(digits, narrow_net):
    x, y = digits.test.x[:4].float(), digits.test.y[:4]
    x = x / 255 if x.max() > 1 else x
    with pytest.raises(ValueError) as e:
        pgd(narrow_net, x * 255, y, eps=8 / 255, step_size=2 / 255, steps=1)
    assert_one_line(str(e.value), "images in [0, 1]")


# --------------------------------------------------------------------------- config errors before any job


def _config_error(edit):
    config = yaml.safe_load((REPO / "tests" / "tiny.yaml").read_text())
    edit(config)
    try:  # what workflow/rules/common.smk does, in this order, before building any job
        validate.apply_schema(config)
        validate.check(config, root_exists=validate.check_root)
    except vocab.ConfigError as e:
        return str(e)
    raise AssertionError("the config was accepted")


CONFIG_ERRORS = [
    ("unknown-key", lambda c: c.update(learning_rate=0.1), "learning_rate"),
    ("bad-type", lambda c: c["datasets"]["digits"]["eval"].update(steps="20"), "steps"),
    ("eps-above-1", lambda c: c["datasets"]["digits"]["eval"].update(eps=8), "eps"),
    ("empty-cutoffs", lambda c: c["cutoffs"].update(after=[]), "after"),
    ("missing-root", lambda c: c["datasets"].update(cifar10={**c["datasets"]["digits"], "root": "/nonexistent"}),
     "datasets.cifar10.root = '/nonexistent' does not exist"),
    ("unknown-arch", lambda c: c["datasets"]["digits"].update(archs=["resnet19"]), "resnet19"),
    ("unknown-dataset", lambda c: c["datasets"].update(svhn=c["datasets"]["digits"]), "svhn"),
]


@pytest.mark.parametrize("name, edit, word", CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_config_errors(name, edit, word):
    assert word in _config_error(edit)


UNSAFE_TAGS = ['!!python/object/apply:os.system ["touch PWNED"]', "!!python/object:argparse.Namespace {}",
               "!custom 3"]


@pytest.mark.parametrize("tag", UNSAFE_TAGS, ids=["python-apply", "python-object", "custom"])
@pytest.mark.parametrize("entry", ["verify", "cost", "layers"])
def test_config_with_an_object_tag_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, entry, tag):
    """Issue 20 G: a YAML tag in a config is refused by the safe loader; every CLI entry point that reads a config
    says so in one line naming the file, its line and the tag (verify used to print a yaml traceback). Snakemake
    itself parses --configfile before the Snakefile runs: its message is its own (docs/recovery.md)."""
    lines = (REPO / "tests" / "tiny.yaml").read_text().splitlines()
    bad = tmp_path / "bad.yaml"
    bad.write_text("\n".join([*lines, f"evil: {tag}", ""]))
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    args = {"verify": ["verify", "--root", str(tmp_path), "--configfile", str(bad)],
            "cost": ["cost", "--configfile", str(bad)], "layers": ["layers", "resnet18", "--config", str(bad)]}[entry]
    assert cli.main(args) == 2
    out = capsys.readouterr()
    assert_one_line(out.err + out.out, str(bad), f"line {len(lines) + 1}", tag.split()[0].split("[")[0],
                    "is not allowed")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_config_error_stops_snakemake_before_any_job(tiny_run, tmp_path):
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    config["datasets"]["cifar10"] = {**config["datasets"]["digits"], "root": "/nonexistent"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(tiny_run)
    rc, out = snakemake(tiny_run, *TARGETS, "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert rc != 0 and "config error: datasets.cifar10.root = '/nonexistent' does not exist" in out
    assert not re.search(r"^(local)?rule \w+:$", out, re.M) and snapshot(tiny_run) == before


@pytest.mark.slow
def test_dry_run_lists_the_jobs_without_the_datasets(tiny_run, tmp_path):
    """Users list and price the paper's jobs before downloading the data: a missing root is a warning in a dry run."""
    config = yaml.safe_load((tiny_run / "tiny.yaml").read_text())
    config["datasets"]["cifar10"] = {**config["datasets"]["digits"], "root": "/nonexistent"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(tiny_run)
    rc, out = snakemake(tiny_run, *TARGETS, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert rc == 0, out
    assert "datasets.cifar10.root = '/nonexistent' does not exist" in out and "a real run stops before any job" in out
    assert re.search(r"^prepare_data\s+1$", out, re.M) and snapshot(tiny_run) == before


# --------------------------------------------------------------------------- permissions, locks, signals


def test_every_artifact_writer_applies_the_umask(tmp_path, digits):
    """0644 under umask 022 (and 0640 under 027): artifacts are readable by the group, never mkstemp's 0600."""
    from advlayers.core.datasets import prepare_dataset
    from advlayers.analyses.features import FORMAT, save_activations
    from advlayers.io import atomic_write, save_torch, write_json, write_parquet

    net = build_model("resnet18", 10, 32, seed=0, width=0.25)
    activations = {"label": [1], "pred_clean": [1], "pred_adv": [0], "linf": [0.1], "modules": {},
                   "meta": {"format": FORMAT, "modules": []}}
    writers = {
        "data.pt": lambda p: prepare_dataset("digits", None, p),
        "ckpt.pt": lambda p: save_checkpoint(p, net, dataset="digits", seed=0, epoch=0, cell="initial"),
        "state.pt": lambda p: save_torch(p, {"epoch": 1}),
        "record.json": lambda p: write_json(p, {"records": []}),
        "table.parquet": lambda p: write_parquet(p, pd.DataFrame({"a": [1]}), metadata={"inputs": {}}),
        "vectors.npz": lambda p: save_activations(p, activations),
        "claims.md": lambda p: atomic_write(p, "# claims\n"),
    }
    previous = os.umask(0o022)
    try:
        for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
            os.umask(umask)
            for name, write in writers.items():
                path = tmp_path / oct(umask) / name
                write(path)
                assert path.stat().st_mode & 0o777 == mode, (name, oct(path.stat().st_mode))
    finally:
        os.umask(previous)


@pytest.mark.slow
def test_workflow_artifacts_are_group_readable(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in (tiny_run / "results").rglob("*") if p.is_file()]
    assert len(files) > 20
    wrong = {str(p.relative_to(tiny_run)): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != 0o666 & ~umask}
    assert not wrong, wrong
    if umask == 0o022:
        assert all(p.stat().st_mode & 0o777 == 0o644 for p in files)


def _read_only(root: Path, command: list[str]) -> tuple[int, str]:
    """`command` in `root` with root/results read-only: a read-only bind mount (root ignores permissions)."""
    env = library_env()
    if os.geteuid() != 0:
        for p in [root / "results", *(root / "results").rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        try:
            proc = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env, timeout=600)
        finally:
            for p in [root / "results", *(root / "results").rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)
    else:
        probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro results results"], cwd=root,
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"no read-only bind mount here (unshare: {probe.stderr.strip()})")
        script = f"mount --bind -o ro results results && exec {shlex.join(command)}"
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=root, capture_output=True, text=True,
                              env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_read_only_results_folder(tiny_run, tmp_path):
    """A run that has to write into a read-only results folder stops before any job, naming the files; the
    results can still be verified."""
    root = copy_of(tiny_run, tmp_path / "run")
    config = yaml.safe_load((root / "tiny.yaml").read_text())
    config["datasets"]["digits"]["eval"]["steps"] = 2  # every evaluation must run again
    (root / "tiny2.yaml").write_text(yaml.safe_dump(config))
    before = snapshot(root)
    rc, out = _read_only(root, [sys.executable, "-m", "snakemake", *TARGETS, "--cores", "1", "--configfile",
                                "tiny2.yaml"])
    assert rc != 0 and "Write-protected output files for rule" in out and "Traceback" not in out, out[-3000:]
    assert not re.search(r"^(local)?rule \w+:$", out, re.M) and snapshot(root) == before
    # a missing table part (the rebuild marker must be written): the same, one line
    (root / records(ADV, "pretrained")).unlink()
    rc, out = _read_only(root, [sys.executable, "-m", "snakemake", *TARGETS, "--cores", "1", *CONFIG])
    assert rc != 0 and "the workflow needs a writable results folder" in out, out[-3000:]
    rc, out = _read_only(root, [sys.executable, "-m", "advlayers", "verify"])
    assert rc == 1 and f"{records(ADV, 'pretrained')}: missing" in out, out


@pytest.mark.slow
def test_ctrl_c_on_pretraining_saves_the_state_and_the_rerun_completes(tiny_run, tmp_path):
    """Ctrl-C (SIGINT) on `advlayers pretrain`: the batch finishes, the state is saved, one line, status 130;
    the same command again resumes and writes the checkpoint."""
    state, out, log = tmp_path / "state.pt", tmp_path / "net.pt", tmp_path / "pretrain.log"
    args = [sys.executable, "-m", "advlayers", "pretrain", "--data", tiny_run / DATA,
            "--arch", "resnet18", "--pretraining", "adversarial", "--recipe", "mnist5k-demo", "--width", "0.25", "--seed", "0",
            "--device", "cpu", "--threads", "1", "--state", state, "--out", out, "--initial", tmp_path / "init.pt",
            "--logfile", log, "--override=epochs=4", "--override=train_subset=192", "--override=batch_size=32",
            "--override=precision='fp32'"]
    env = library_env()
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and re.search(r"epoch 1/4 loss", log.read_text()):
            break  # training is under way (the signal handlers are installed)
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert_one_line(stderr, "preempted by signal 2", "state saved to")
    assert state.is_file() and not out.exists()
    rerun = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=env, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in log.read_text()
    payload = read_checkpoint(out)
    assert len(payload["meta"]["history"]) == 4 and not state.exists()


# --------------------------------------------------------------------------- issue 20: every fault kind repaired
# One copy of the tiny run. First what the next plain run repairs by itself (C, D): a cell checkpoint deleted from
# its group folder, a per-dataset table deleted. Then one fault of each kind that only `verify` sees (A, B):
# corrupt (a flipped table value, an edited evaluation record, mtimes kept), swapped (another net's outcomes),
# stale (a cell made from another pretrained net); `snakemake verify` names each file itself, its printed command
# (the run's --configfile and --cores) runs as printed, and the tables, outcomes and claims are the original ones.

GONE_CELL = cell_file(ADV, "m100000")
DATASET_TABLE = layout.table_path(layout.cutoff_table("digits"))
SWAPPED_OUTCOMES = outcomes(ADV, "retrained_m000011")
STALE_CELL = cell_file(CONV, "m100000")


def _all_numbers(root: Path) -> dict:
    out = {"cutoff": cutoff_numbers(root)}
    out["outcomes"] = pd.read_parquet(root / layout.table_path("outcomes")).sort_values(
        ["pretraining", "cell", "test_index"]).reset_index(drop=True)[["pretraining", "cell", "test_index",
                                                                       "clean_correct", "robust_correct"]]
    claims = pd.read_parquet(root / layout.path("claims_table"))
    out["claims"] = claims[[c for c in ("claim", "dataset", "arch", "value", "verdict") if c in claims]]
    return out


def _keep_mtime(path: Path, change) -> None:
    st = path.stat()
    change()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture(scope="module")
def repaired(tiny_run, tmp_path_factory):
    root = copy_of(tiny_run, tmp_path_factory.mktemp("repaired") / "run")
    steps = {"before": _all_numbers(root)}
    (root / GONE_CELL).unlink()
    (root / DATASET_TABLE).unlink()
    steps["verify_missing"] = _verify_in_process(root, "--configfile", "tiny.yaml")
    steps["plain"] = snakemake(root, *TARGETS, "--cores", "2", *CONFIG, check=False)
    steps["after_plain"] = _all_numbers(root)
    steps["restored"] = [(root / p).is_file() for p in (GONE_CELL, DATASET_TABLE)]
    _flipped_table_value(root)
    path = root / records(CONV, "pretrained")
    _keep_mtime(path, lambda: path.write_text(path.read_text().replace('"robust_acc": 0.', '"robust_acc": 0.9', 1)))
    target = root / SWAPPED_OUTCOMES
    _keep_mtime(target, lambda: shutil.copyfile(root / outcomes(CONV, "retrained_m000011"), target))
    _keep_mtime(root / STALE_CELL, lambda: _stale_cell(root))
    steps["dry"] = dry_run(root, *TARGETS, *CONFIG)
    steps["verify"] = snakemake(root, "verify", "--cores", "2", *CONFIG, check=False)
    last = [line for line in steps["verify"][1].splitlines() if "to rebuild them all" in line]
    steps["command"] = shlex.split(last[0].rsplit(": ", 1)[1]) if last else []
    if steps["command"]:
        proc = subprocess.run([sys.executable, "-m", *steps["command"]], cwd=root, capture_output=True, text=True,
                              timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
        steps["recovery"] = (proc.returncode, proc.stdout + proc.stderr)
    steps["after"] = _all_numbers(root)
    steps["verify_after"] = snakemake(root, "verify", "--cores", "1", *CONFIG, check=False)
    steps["dry_after"] = dry_run(root, *TARGETS, *CONFIG)
    return root, steps


def _assert_same_numbers(a: dict, b: dict) -> None:
    for key in a:
        pd.testing.assert_frame_equal(a[key], b[key], obj=key)


@pytest.mark.slow
def test_named_figure_target_rebuilds_its_deleted_dataset_table(tiny_run, tmp_path):
    """Issue 20 D for the paper figure targets: after deleting the per-dataset cut-off table, `snakemake fig2`
    rebuilds it (it used to say "Nothing to be done": the figure looked up to date), verify named it missing
    before, and the numbers are the original ones."""
    root = copy_of(tiny_run, tmp_path / "run")
    before = pd.read_parquet(root / DATASET_TABLE)
    (root / DATASET_TABLE).unlink()
    rc, out = _verify_in_process(root, "--configfile", "tiny.yaml")
    assert rc == 1 and f"{DATASET_TABLE}: missing: the config implies it" in out
    jobs = dry_run(root, "fig2", *CONFIG)
    assert DATASET_TABLE in jobs.get("table", []) and "figure" in jobs, jobs
    assert not {"retrain", "evaluate", "pretrain"} & set(jobs)
    snakemake(root, "fig2", "--cores", "2", *CONFIG)
    pd.testing.assert_frame_equal(pd.read_parquet(root / DATASET_TABLE), before)
    assert _verify_in_process(root, "--configfile", "tiny.yaml")[0] == 0


@pytest.mark.slow
def test_deleted_cell_and_dataset_table_are_listed_and_rebuilt_by_the_next_run(repaired):
    """Issue 20 C, D: verify (given the run's config) lists both as missing; the next plain run rebuilds them (the
    group's retraining, its evaluation, the tables) and the numbers are the original ones."""
    root, steps = repaired
    rc, out = steps["verify_missing"]
    assert rc == 1 and f"{GONE_CELL}: missing: " in out and f"{DATASET_TABLE}: missing: the config implies it" in out
    assert f"--forcerun {layout.group_dir(ADV, 'm100000')}" in out
    rc, out = steps["plain"]
    assert rc == 0 and "Nothing to be done" not in out, out[-3000:]
    assert steps["restored"] == [True, True]
    _assert_same_numbers(steps["after_plain"], steps["before"])


@pytest.mark.slow
def test_each_fault_kind_is_named_as_the_file_itself_and_repaired_by_the_printed_command(repaired):
    """Issue 20 A, B: invisible to Snakemake (nothing to do), named by verify as the damaged file itself (not only
    what was made from it); its command, run as printed, restores the original tables and claims, and verify is
    clean again with nothing left to do."""
    root, steps = repaired
    assert steps["dry"] == {}
    rc, out = steps["verify"]
    assert rc != 0 and "Traceback" not in out
    kinds = {line.split(": ")[0]: line.split(": ")[1] for line in out.splitlines() if line.startswith("results/")}
    assert kinds[CUTOFF] == "corrupt" and kinds[records(CONV, "pretrained")] == "corrupt", out[-3000:]
    assert kinds[SWAPPED_OUTCOMES] == "swapped" and kinds[STALE_CELL] == "stale", out[-3000:]
    assert steps["command"][:6] == ["snakemake", "--cores", "2", "all_figures", "--configfile", "tiny.yaml"]
    rc, out = steps["recovery"]
    assert rc == 0, out[-3000:]
    _assert_same_numbers(steps["after"], steps["before"])
    rc, out = steps["verify_after"]
    assert rc == 0 and re.search(r"^verified \d+ artifacts: all consistent$", out, re.M), out[-3000:]
    assert steps["dry_after"] == {}


def test_results_being_a_file_is_one_line(tmp_path):
    """Issue 20 G: `results` a file (not a folder) stops Snakemake with one line naming it, no traceback."""
    from helpers import copy_repo

    root = copy_repo(tmp_path / "repo")
    (root / "results").write_text("not a folder")
    rc, out = snakemake(root, "-n", *TARGETS, *CONFIG, check=False)
    assert rc != 0 and "Traceback" not in out and "NotADirectoryError" not in out, out[-3000:]
    assert "results is a file, not a folder" in out, out[-3000:]
