"""Preemption-safe training: SIGKILL at any time, SIGTERM/SIGUSR1 mid-epoch, and bit-identical resumes."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from advlayers.checkpoints import load_checkpoint
from advlayers.models import ModelSpec, ModularNet, Normalize
from advlayers.training import Preempted, train

from conftest import tiny_recipe

SRC = Path(__file__).resolve().parents[1] / "src"

# The workflow's pretraining in miniature: pretrain with a resume state, write the checkpoint, drop the state.
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from advlayers.checkpoints import save_checkpoint
    from advlayers.datasets import load_dataset
    from advlayers.training import get_recipe, pretrain
    from torch.optim.optimizer import register_optimizer_step_post_hook

    out, state = sys.argv[1], sys.argv[2]
    steps = [0]

    def hook(optimizer, args, kwargs):
        steps[0] += 1
        if steps[0] == int(os.environ.get("SELF_SIGTERM_AT_STEP", 0)):
            os.kill(os.getpid(), signal.SIGTERM)
        if os.environ.get("READY_FILE") and steps[0] == 1:
            Path(os.environ["READY_FILE"]).touch()
        time.sleep(float(os.environ.get("STEP_SLEEP", 0)))

    register_optimizer_step_post_hook(hook)
    recipe = get_recipe("mnist5k-demo", epochs=3, batch_size=64, train_subset=128, eps=0.1, step_size=0.05,
                        steps=1, precision="fp32", channels_last=False)
    result = pretrain("resnet18", load_dataset("digits"), recipe, mode="adversarial", seed=3, state_path=state,
                      progress=False)
    save_checkpoint(out, result.model, dataset="digits", seed=3, epoch=recipe.epochs, history=result.history,
                    resumed_from=[result.resumed_from_epoch, result.resumed_from_batch])
    Path(state).unlink(missing_ok=True)
""")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("SELF_SIGTERM_AT_STEP", "READY_FILE", "STEP_SLEEP")}
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    return {**env, **extra}


def _start(tmp, name, **env):
    script = tmp / "run.py"
    script.write_text(SCRIPT)
    out, state = tmp / "ckpt" / f"{name}.pt", tmp / "state" / f"{name}.pt"
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(state)], env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out, state


def _run(tmp, name, **env):
    proc, out, state = _start(tmp, name, **env)
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
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    rc, output, out, state = _run(tmp, "ref")
    assert rc == 0, output
    assert not state.exists()
    return _weights(out)


def test_sigkill_then_rerun_is_bit_identical(tmp_path, reference):
    proc, out, state = _start(tmp_path, "run")
    _wait_for(state, proc)  # the first epoch's state is on disk
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # a killed job never leaves a partial checkpoint nor temporaries where later stages read
    assert not out.exists() or load_checkpoint(out)
    assert _no_temporaries(out.parent) == []
    assert torch.load(state, weights_only=True)["epoch"] >= 1
    rc, output, out, state = _run(tmp_path, "run")
    assert rc == 0, output
    weights, payload = _weights(out)
    assert payload["meta"]["resumed_from"][0] >= 1
    assert _same(weights, reference[0])
    assert [h["loss"] for h in payload["meta"]["history"]] == [h["loss"] for h in reference[1]["meta"]["history"]]
    assert _no_temporaries(out.parent, state.parent) == [] and not state.exists()


def test_sigterm_mid_epoch_saves_and_exits(tmp_path, reference):
    # step 3 of 6 (2 batches per epoch): the signal arrives in the middle of epoch 2
    rc, output, out, state = _run(tmp_path, "run", SELF_SIGTERM_AT_STEP="3")
    assert rc == 128 + signal.SIGTERM, output
    assert "preempted by signal 15 at epoch 2, batch 1" in output
    assert not out.exists()
    saved = torch.load(state, weights_only=True)
    assert (saved["epoch"], saved["batch"]) == (1, 1) and len(saved["history"]) == 1
    rc, output, out, state = _run(tmp_path, "run")
    assert rc == 0, output
    weights, payload = _weights(out)
    assert payload["meta"]["resumed_from"] == [1, 1]
    assert _same(weights, reference[0])
    assert [h["loss"] for h in payload["meta"]["history"]] == [h["loss"] for h in reference[1]["meta"]["history"]]


def test_external_sigterm_exits_promptly_and_resumes(tmp_path, reference):
    ready = tmp_path / "ready"
    proc, out, state = _start(tmp_path, "run", READY_FILE=str(ready))
    _wait_for(ready, proc)  # inside the first epoch
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    output, _ = proc.communicate(timeout=300)
    waited = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert waited < 60, f"took {waited:.0f}s to stop"  # one batch
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] * 2 + saved["batch"] >= 1
    rc, output, out, state = _run(tmp_path, "run")
    assert rc == 0, output
    assert _same(_weights(out)[0], reference[0])


# ------------------------------------------------------------------ in process (small net, fast)


def small_net(seed=0) -> ModularNet:
    """A six-module net without BatchNorm (so per-rank batches cannot change the result)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = [
            nn.Sequential(Normalize(), nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            nn.Identity(),
            nn.Identity(),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 10)),
        ]
    return ModularNet(modules, ModelSpec("resnet18", 10, 32))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_mid_epoch_in_process(digits, tmp_path, signum):
    recipe = tiny_recipe(train_subset=256, epochs=2, batch_size=64, steps=2)
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
