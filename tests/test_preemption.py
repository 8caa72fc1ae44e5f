"""Preemption-safe training: SIGKILL at any time, SIGTERM/SIGUSR1/SIGINT mid-epoch, and bit-identical resumes.
The subprocess runs pretrain a narrow resnet18 (width 0.25) on 128 digits, one thread."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from advlayers.core.checkpoints import load_checkpoint
from advlayers.core.datasets import load_prepared, prepare_dataset
from advlayers.core.recipes import get_recipe
from advlayers.core.resume import PREEMPT_SIGNALS, Preempted
from advlayers.core.training import pretrain, train

from helpers import tiny_recipe, small_net

SRC = Path(__file__).resolve().parents[1] / "src"

RECIPE = dict(epochs=3, batch_size=64, train_subset=128, eps=0.1, step_size=0.05, steps=1, precision="fp32",
              channels_last=False)

# The workflow's pretraining in miniature: pretrain with a resume state, write the checkpoint, drop the state.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from advlayers.core.checkpoints import save_checkpoint
    from advlayers.core.datasets import load_prepared
    from advlayers.core.recipes import get_recipe
    from advlayers.core.training import pretrain
    from torch.optim.optimizer import register_optimizer_step_post_hook

    out, state, data = sys.argv[1], sys.argv[2], sys.argv[3]
    steps = [0]

    def hook(optimizer, args, kwargs):
        steps[0] += 1
        if steps[0] == int(os.environ.get("SELF_SIGNAL_AT_STEP", 0)):
            os.kill(os.getpid(), getattr(signal, os.environ["SELF_SIGNAL"]))
        if os.environ.get("READY_FILE") and steps[0] == 1:
            Path(os.environ["READY_FILE"]).touch()
        time.sleep(float(os.environ.get("STEP_SLEEP", 0)))

    register_optimizer_step_post_hook(hook)
    recipe = get_recipe("mnist5k-demo", **RECIPE)
    result = pretrain("resnet18", load_prepared(data), recipe, mode="adversarial", seed=3, state_path=state,
                      progress=False, width=0.25)
    save_checkpoint(out, result.model, dataset="digits", seed=3, epoch=recipe.epochs, history=result.history,
                    resumed_from=[result.resumed_from_epoch, result.resumed_from_batch])
    Path(state).unlink(missing_ok=True)
""").replace("**RECIPE", ", ".join(f"{k}={v!r}" for k, v in RECIPE.items()))


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SELF_SIGNAL_AT_STEP", "SELF_SIGNAL", "READY_FILE", "STEP_SLEEP", "ADVLAYERS_PRECISION")}
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return {**env, **extra}


def _start(tmp, name, data, **env):
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    out, state = tmp / "ckpt" / f"{name}.pt", tmp / "state" / f"{name}.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(state), str(data)], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out, state


def _run(tmp, name, data, **env):
    proc, out, state = _start(tmp, name, data, **env)
    output, _ = proc.communicate(timeout=600)
    return proc.returncode, output, out, state


def _weights(path):
    model, payload = load_checkpoint(path)
    return model.state_dict(), payload


def _wait_for(path: Path, proc, timeout=300):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path} appeared:\n{proc.stdout.read()}"
        assert time.monotonic() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _no_temporaries(*folders):
    return [p for f in folders if f.exists() for p in f.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """digits as the workflow's prepared artifact (the runs skip sklearn's import, as workflow jobs do)."""
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    prepare_dataset("digits", None, path)
    return path


@pytest.fixture(scope="module")
def reference(data):
    """The uninterrupted run: the script's pretraining in this process, with one thread as there (training on the
    CPU is bit-identical from one process to another): (weights, losses per epoch)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = pretrain("resnet18", load_prepared(data), get_recipe("mnist5k-demo", **RECIPE), mode="adversarial",
                          seed=3, progress=False, width=0.25)
    finally:
        torch.set_num_threads(threads)
    return result.model.state_dict(), [h["loss"] for h in result.history]


def test_sigkill_then_external_sigterm_then_rerun_is_bit_identical(tmp_path, data, reference):
    """A job killed outright (SIGKILL, at any time), then preempted by SLURM (SIGTERM from outside, mid-epoch),
    then run to the end: the same net, bit for bit, as the uninterrupted run."""
    # 1. SIGKILL once the first epoch's state is on disk (each step sleeps, so the run cannot finish first)
    proc, out, state = _start(tmp_path, "run", data, STEP_SLEEP="0.3")
    _wait_for(state, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # a killed job never leaves a partial checkpoint nor temporaries where later stages read
    assert not out.exists() or load_checkpoint(out)
    assert _no_temporaries(out.parent) == []
    killed = torch.load(state, weights_only=True)
    assert killed["epoch"] >= 1 and killed["batch"] == 0
    # 2. the rerun resumes; SIGTERM from outside after its first step: it stops promptly with a mid-run state
    ready = tmp_path / "ready"
    proc, out, state = _start(tmp_path, "run", data, READY_FILE=str(ready), STEP_SLEEP="0.3")
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    output, _ = proc.communicate(timeout=300)
    waited = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert waited < 60, f"took {waited:.0f}s to stop"  # one batch
    assert "preempted by signal 15" in output and not out.exists()
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] * 2 + saved["batch"] == killed["epoch"] * 2 + 1  # one step after the resume
    # 3. the last rerun completes
    rc, output, out, state = _run(tmp_path, "run", data)
    assert rc == 0, output
    weights, payload = _weights(out)
    assert payload["meta"]["resumed_from"] == [saved["epoch"], saved["batch"]]
    assert _same(weights, reference[0])
    assert [h["loss"] for h in payload["meta"]["history"]] == reference[1]
    assert _no_temporaries(out.parent, state.parent) == [] and not state.exists()


def test_sigint_mid_epoch_saves_and_exits_like_sigterm(tmp_path, data, reference):
    """Ctrl-C (SIGINT) is a preemption like SLURM's SIGTERM: the batch finishes, a mid-epoch state is saved, the
    process exits with 128 + 2, and a rerun resumes bit-identically."""
    # step 3 of 6 (2 batches per epoch): the signal arrives in the middle of epoch 2
    rc, output, out, state = _run(tmp_path, "run", data, SELF_SIGNAL="SIGINT", SELF_SIGNAL_AT_STEP="3")
    assert rc == 128 + signal.SIGINT == 130, output
    assert "preempted by signal 2 at epoch 2, batch 1" in output and "KeyboardInterrupt" not in output
    assert not out.exists()
    saved = torch.load(state, weights_only=True)
    assert (saved["epoch"], saved["batch"]) == (1, 1) and len(saved["history"]) == 1
    assert saved["sums"][0][2] == 64  # one batch of adversarial examples only (pretraining: no clean samples)
    rc, output, out, state = _run(tmp_path, "run", data)
    assert rc == 0, output
    weights, payload = _weights(out)
    assert payload["meta"]["resumed_from"] == [1, 1]
    assert _same(weights, reference[0])
    assert [h["loss"] for h in payload["meta"]["history"]] == reference[1]


# ------------------------------------------------------------------ in process (small net, fast)


def test_preemption_signals():
    assert set(PREEMPT_SIGNALS) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGINT}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_signal_mid_epoch_in_process(digits, tmp_path, signum):
    assert signum in PREEMPT_SIGNALS  # (else the signal would end the test session, e.g. SIGINT's KeyboardInterrupt)
    recipe = tiny_recipe(train_subset=256, epochs=2, batch_size=64, steps=2, include_clean=True)
    full = train(small_net(), digits.train, recipe, mode="adversarial", seed=5, progress=False)
    state = tmp_path / "state.pt"
    previous = signal.getsignal(signum)

    def send(epoch, batch, model):
        if (epoch, batch) == (1, 2):
            os.kill(os.getpid(), signum)

    with pytest.raises(Preempted) as err:
        train(small_net(), digits.train, recipe, mode="adversarial", seed=5, state_path=state, progress=False,
              on_batch_end=send)
    assert err.value.code == 128 + signum and (err.value.epoch, err.value.batch) == (1, 2)
    assert signal.getsignal(signum) is previous  # handlers restored
    saved = torch.load(state, weights_only=True)
    assert (saved["epoch"], saved["batch"]) == (1, 2) and saved["sums"][0][2] == 2 * 2 * 64  # clean + adversarial
    torch.manual_seed(123)  # the resume does not depend on the caller's RNG
    resumed = train(small_net(), digits.train, recipe, mode="adversarial", seed=5, state_path=state, progress=False)
    assert (resumed.resumed_from_epoch, resumed.resumed_from_batch) == (1, 2)
    assert _same(resumed.model.state_dict(), full.model.state_dict())
    assert [(h["loss"], h["train_acc"]) for h in resumed.history] == [(h["loss"], h["train_acc"]) for h in full.history]


def test_signal_in_last_batch_finishes(digits, tmp_path):
    """A signal during the last batch of the last epoch: the run is complete, so it returns normally."""
    recipe = tiny_recipe(train_subset=128, epochs=1, batch_size=64, steps=1)

    def send(epoch, batch, model):
        if batch == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(small_net(), digits.train, recipe, mode="conventional", seed=0, state_path=tmp_path / "s.pt",
                   progress=False, on_batch_end=send)
    assert len(result.history) == 1


def test_no_handler_without_state(digits):
    recipe = tiny_recipe(train_subset=128, epochs=1, batch_size=64)
    seen = []

    def look(epoch, batch, model):
        seen.append(signal.getsignal(signal.SIGTERM))

    train(small_net(), digits.train, recipe, mode="conventional", seed=0, progress=False, on_batch_end=look)
    assert seen and all(h is signal.getsignal(signal.SIGTERM) for h in seen)


def test_stale_temporaries_are_removed(digits, tmp_path):
    state = tmp_path / "state.pt"
    stale = tmp_path / ".state.pt.abc123.tmp"
    stale.write_bytes(b"partial")
    train(small_net(), digits.train, tiny_recipe(train_subset=64, batch_size=64), mode="conventional", seed=0,
          state_path=state, progress=False)
    assert not stale.exists() and state.exists()
