"""Multi-process training on CPU (gloo, 2 processes under torchrun), and `advlayers pretrain` as the
torchrun entry point.

Equality with one process holds for a net without BatchNorm: SyncBatchNorm has no CPU kernels, so CPU
ranks normalise with their own half-batch statistics (the sync path is taken on CUDA only). With SGD,
DDP's mean of the ranks' half-batch gradients equals the full-batch gradient up to float rounding.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from advlayers.core import distributed
from advlayers.core.datasets import load_dataset, prepare_dataset
from advlayers.core.splits import epoch_batches
from advlayers.core.models import build_model
from advlayers.core.recipes import get_recipe
from advlayers.core.training import train

from helpers import small_net

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent
DDP_TOLERANCE = 1e-5  # max |w_2ranks - w_1process| after 8 SGD steps

WORKER = textwrap.dedent("""
    import os, signal, sys
    import torch
    from advlayers.core import distributed
    from advlayers.core.datasets import load_dataset
    from advlayers.core.training import train
    from test_distributed import ddp_recipe, small_net
    torch.set_num_threads(1)  # after conftest's import-time setting

    out, state = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    assert distributed.init("cpu") and distributed.world_size() == 2
    kill = os.environ.get("SIGNAL_RANK_AT")  # "rank,epoch,batch": that rank alone gets SIGUSR1 there

    def on_batch_end(epoch, batch, model):
        if kill and [distributed.rank(), epoch, batch] == [int(v) for v in kill.split(",")]:
            os.kill(os.getpid(), signal.SIGUSR1)

    result = train(small_net(), load_dataset("digits").train, ddp_recipe(), mode="conventional", seed=7,
                   state_path=state, progress=False, on_batch_end=on_batch_end)
    if distributed.is_main():
        torch.save({"model": result.model.state_dict(), "history": result.history,
                    "resumed": [result.resumed_from_epoch, result.resumed_from_batch]}, out)
    # as advlayers.jobs.pretrain does: no rank tears gloo down while another still uses it (that aborted rank 1 once)
    distributed.barrier()
    distributed.cleanup()
""")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def ddp_recipe():
    return get_recipe("mnist5k-demo", optimizer="sgd", lr=0.05, momentum=0.9, epochs=2, batch_size=64,
                      train_subset=256, schedule="constant", precision="fp32", channels_last=False)


def torchrun(tmp, args, nproc=2, env=None, module=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    if module:
        cmd += ["-m", module]
    else:
        script = tmp / "worker.py"
        script.write_text(WORKER)
        cmd.append(str(script))
    env = {k: v for k, v in os.environ.items() if k not in ("SIGNAL_RANK_AT",)} | (env or {})
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=600)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_ranks_equal_one_process(digits, tmp_path):
    proc = torchrun(tmp_path, [tmp_path / "ddp.pt"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    single = train(small_net(), digits.train, ddp_recipe(), mode="conventional", seed=7, progress=False)
    diff = max_diff(ddp["model"], single.model.state_dict())
    print(f"max |w_ddp - w_single| = {diff:.3g}")
    assert diff < DDP_TOLERANCE
    assert max_diff(ddp["model"], small_net().state_dict()) > 1e-3  # it did train
    for h2, h1 in zip(ddp["history"], single.history, strict=True):
        assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-5) and h2["train_acc"] == h1["train_acc"]


def test_preemption_signal_on_one_rank_stops_all_and_resumes(tmp_path):
    state = tmp_path / "state.pt"
    ref = torchrun(tmp_path, [tmp_path / "ref.pt"])
    assert ref.returncode == 0, ref.stderr[-3000:]
    # rank 1 alone is signalled after batch 1 of epoch 2: both ranks stop there, rank 0 saves
    cut = torchrun(tmp_path, [tmp_path / "cut.pt", state], env={"SIGNAL_RANK_AT": "1,1,1"})
    assert cut.returncode != 0 and "preempted by signal" in cut.stderr
    saved = torch.load(state, weights_only=True)
    assert (saved["epoch"], saved["batch"]) == (1, 1) and len(saved["rng_ranks"]) == 2
    assert not (tmp_path / "cut.pt").exists()
    again = torchrun(tmp_path, [tmp_path / "cut.pt", state])
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = torch.load(tmp_path / "ref.pt", weights_only=True), torch.load(tmp_path / "cut.pt", weights_only=True)
    assert b["resumed"] == [1, 1]
    assert max_diff(a["model"], b["model"]) == 0.0
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_cli_under_torchrun_writes_one_checkpoint(tmp_path):
    data = tmp_path / "digits.pt"
    prepare_dataset("digits", None, data)
    out, initial = tmp_path / "ckpt" / "pretrain.pt", tmp_path / "ckpt" / "init.pt"
    state = tmp_path / "state" / "pretrain.pt"
    proc = torchrun(tmp_path, ["pretrain", "--data", data, "--arch", "resnet18", "--pretraining", "adversarial",
                               "--recipe", "mnist5k-demo", "--override", "epochs=1", "--override", "train_subset=128",
                               "--override", "batch_size=64", "--override", "steps=1", "--override",
                               "precision='fp32'", "--width", "0.25", "--device", "cpu", "--state", state,
                               "--out", out, "--initial", initial, "--logfile", tmp_path / "log.txt",
                               "--threads", "1"],
                    module="advlayers")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from advlayers.core.checkpoints import load_checkpoint

    model, payload = load_checkpoint(out, arch="resnet18", dataset="digits", expect={"cell": "pretrained"})
    assert payload["meta"]["world_size"] == 2 and len(payload["meta"]["history"]) == 1
    assert payload["width"] == 0.25
    _, init = load_checkpoint(initial, arch="resnet18", dataset="digits", expect={"cell": "initial", "epochs": 0})
    assert init["meta"]["world_size"] == 2 and payload["meta"]["start_digest"] == init["digest"]
    assert not state.exists()
    log = (tmp_path / "log.txt").read_text()
    assert "SyncBatchNorm needs CUDA" in log and "rank0" in log and "rank1" not in log


# ------------------------------------------------------------------ helpers, in process


def test_rank_slices_partition_the_single_process_batches(digits):
    split = digits.train.subset(200, seed=0)
    one = list(split.batches(64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(3),
                             drop_last=True))
    mine = list(epoch_batches(split, 64, torch.Generator().manual_seed(3)))
    assert len(one) == len(mine) == 3
    for (x, y), (i, x1, y1) in zip(one, mine):
        assert torch.equal(x, x1) and torch.equal(y, y1)
    for world in (2, 4):
        parts = [list(epoch_batches(split, 64, torch.Generator().manual_seed(3), rank=r, world_size=world))
                 for r in range(world)]
        for b, (x, y) in enumerate(one):
            assert all(len(p[b][2]) == 64 // world for p in parts)
            assert torch.equal(torch.cat([p[b][1] for p in parts]), x)
            assert torch.equal(torch.cat([p[b][2] for p in parts]), y)
    with pytest.raises(ValueError, match="not divisible"):
        next(epoch_batches(split, 64, torch.Generator(), rank=0, world_size=3))


def test_mid_epoch_start_continues_the_batches(digits):
    split = digits.train.subset(256, seed=0)
    g = torch.Generator().manual_seed(9)
    full = []
    states = []
    for i, x, y in epoch_batches(split, 64, g):
        full.append((x, y))
        states.append(g.get_state())
    resumed = list(epoch_batches(split, 64, torch.Generator().manual_seed(9), start=2, generator_state=states[1]))
    assert [i for i, _, _ in resumed] == [2, 3]
    for (x, y), (_, x1, y1) in zip(full[2:], resumed):
        assert torch.equal(x, x1) and torch.equal(y, y1)


def test_sync_batchnorm_conversion_round_trip():
    model = build_model("resnet18", 10, 32, seed=0).eval()
    x = torch.rand(4, 3, 32, 32)
    ref = model(x)
    weight = model.m0[2].weight
    distributed.convert_sync_batchnorm(model)
    assert isinstance(model.m0[2], nn.SyncBatchNorm) and model.m0[2].weight is weight
    assert torch.equal(model(x), ref)  # eval mode: no synchronisation needed
    distributed.revert_sync_batchnorm(model)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert type(model.m0[2]) is nn.BatchNorm2d and model.m0[2].weight is weight
    assert torch.equal(model(x), ref)
    assert distributed.sync_batchnorm_supported("cuda") and not distributed.sync_batchnorm_supported("cpu")


def test_single_process_helpers():
    assert not distributed.is_initialized() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.init("cpu") is False  # WORLD_SIZE unset: nothing to join
    assert distributed.all_reduce_sum([1.0, 2]) == [1.0, 2] and distributed.all_reduce_max(3) == 3
    assert distributed.rank_device("cuda") == torch.device("cuda")
    assert distributed.default_backend("cpu") == "gloo" and distributed.default_backend("cuda") == "nccl"
    distributed.barrier()
    distributed.cleanup()


def test_folder_split_rank_slices(tmp_path):
    from PIL import Image

    from advlayers.core.splits import FolderSplit

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("RGB", (40, 30), (40 * i, 100 if c == "a" else 200, 7)).save(tmp_path / c / f"{i}.png")
    split = FolderSplit.from_folder(tmp_path, image_size=32, num_workers=0)
    one = list(epoch_batches(split, 4, torch.Generator().manual_seed(1)))
    assert len(one) == 3 and all(x.shape == (4, 3, 32, 32) for _, x, _ in one)
    parts = [list(epoch_batches(split, 4, torch.Generator().manual_seed(1), rank=r, world_size=2)) for r in (0, 1)]
    for b, (_, x, y) in enumerate(one):
        assert torch.equal(torch.cat([parts[0][b][1], parts[1][b][1]]), x)
        assert torch.equal(torch.cat([parts[0][b][2], parts[1][b][2]]), y)
    g = torch.Generator().manual_seed(1)
    states = [g.get_state() for _ in epoch_batches(split, 4, g)]
    resumed = list(epoch_batches(split, 4, torch.Generator().manual_seed(1), start=1, generator_state=states[0]))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(one[1:], resumed))
