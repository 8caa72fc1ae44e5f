import os

import pytest
import torch

from advlayers.attacks import AttackSpec
from advlayers.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from advlayers.evaluation import evaluate
from advlayers.models import build_model


@pytest.fixture()
def saved(tmp_path):
    model = build_model("resnet18", 10, 32, seed=0)
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(path, model, dataset="digits", seed=0, epoch=3, recipe={"lr": 1e-3},
                    pretraining="conventional", retrained_modules=["m0"])
    return model, path


def test_round_trip_with_metadata(saved):
    model, path = saved
    loaded, payload = load_checkpoint(path, arch="resnet18", dataset="digits", num_classes=10)
    for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(v, w), k
    assert payload["epoch"] == 3 and payload["seed"] == 0 and payload["recipe"] == {"lr": 1e-3}
    assert payload["meta"]["retrained_modules"] == ["m0"]
    # readable with the safe loader alone
    assert torch.load(path, weights_only=True)["arch"] == "resnet18"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"], "no temporary file left behind"


def test_failed_write_keeps_previous_file(saved, monkeypatch):
    model, path = saved
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, dataset="digits", seed=1, epoch=4)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_truncated_checkpoint(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(path)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an advlayers checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_pickled_objects_are_refused(tmp_path):
    torch.save(build_model("resnet18", 10, 32), tmp_path / "module.pt")  # a whole pickled nn.Module
    with pytest.raises(CheckpointError, match="corrupt or not an advlayers checkpoint"):
        read_checkpoint(tmp_path / "module.pt")


def test_mismatched_checkpoint(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="arch='resnet18', expected 'vgg11_bn'"):
        load_checkpoint(path, arch="vgg11_bn")
    with pytest.raises(CheckpointError, match="dataset='digits', expected 'cifar10'"):
        load_checkpoint(path, dataset="cifar10")
    payload = read_checkpoint(path)
    payload["arch"] = "resnet50"  # weights of one arch labelled as another
    torch.save(payload, tmp_path / "relabelled.pt")
    with pytest.raises(CheckpointError, match="does not fit arch resnet50"):
        load_checkpoint(tmp_path / "relabelled.pt")


def test_evaluate_record(trained_digits_model, digits):
    spec = AttackSpec(0.05, 0.0125, 5)
    rec = evaluate(trained_digits_model, digits.test, spec, n=100, seed=1, progress=False, dataset="digits",
                   arch="resnet18")
    for key in ("dataset", "arch", "eps", "step_size", "steps", "restarts", "n_eval", "clean_acc", "robust_acc", "seconds"):
        assert key in rec
    assert rec["n_eval"] == 100 and rec["dataset"] == "digits" and rec["steps"] == 5
    assert 0 <= rec["robust_acc"] <= rec["clean_acc"] <= 1 and rec["clean_acc"] > 0.8
    again = evaluate(trained_digits_model, digits.test, spec, n=100, seed=1, progress=False)
    assert again["robust_acc"] == rec["robust_acc"], "a seeded evaluation is reproducible"
    clean_only = evaluate(trained_digits_model, digits.test, AttackSpec(0.0, 0.0, 5), n=100, seed=1, progress=False)
    assert clean_only["robust_acc"] == clean_only["clean_acc"] == rec["clean_acc"]
