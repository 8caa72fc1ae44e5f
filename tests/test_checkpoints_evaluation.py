"""Checkpoints (self-describing, digest-verified, refused when corrupt or not the expected net) and the
evaluation record (accuracies, Wilson intervals, per-sample outcomes)."""

import pytest
import torch

from advlayers.core.attacks import AttackSpec
from advlayers.core.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from advlayers.core.evaluation import evaluate
from advlayers.io import state_digest
from advlayers.core.models import build_model
from advlayers.stats import wilson

from helpers import WIDTH


@pytest.fixture()
def saved(tmp_path):
    model = build_model("resnet18", 10, 32, seed=0, width=WIDTH)
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint(path, model, dataset="digits", seed=0, epoch=3, recipe={"lr": 1e-3},
                    pretraining="conventional", retrained_modules=["m0"])
    return model, path


def _one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_round_trip_with_metadata(saved):
    model, path = saved
    loaded, payload = load_checkpoint(path, arch="resnet18", dataset="digits", num_classes=10)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(v, w), k
    assert payload["epoch"] == 3 and payload["seed"] == 0 and payload["recipe"] == {"lr": 1e-3}
    assert payload["width"] == WIDTH and loaded.spec == model.spec
    assert payload["meta"]["retrained_modules"] == ["m0"] and payload["format"] == "advlayers-checkpoint-v2"
    assert payload["digest"] == state_digest(model.state_dict())
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


def test_flipped_weight_bit_is_corrupt(saved, tmp_path):
    model, path = saved
    # on disk: one bit of the stem conv's weights flipped in the file
    data = bytearray(path.read_bytes())
    weights = model.m0[1].weight.detach().numpy().tobytes()
    at = bytes(data).find(weights)
    assert at > 0, "the weights are stored uncompressed in torch's zip format"
    data[at + len(weights) // 2] ^= 0x01
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    # (torch's zip reader does not check CRCs: the recorded digest is what catches it)
    with pytest.raises(CheckpointError, match="is corrupt: its weights do not match their recorded digest") as err:
        load_checkpoint(flipped)
    _one_line(err)
    # in the payload: a rewritten file whose weights no longer match the recorded digest
    payload = torch.load(path, weights_only=True)
    payload["model"]["m5.2.weight"].view(torch.int32)[0, 0] ^= 1
    torch.save(payload, tmp_path / "bitrot.pt")
    with pytest.raises(CheckpointError, match="is corrupt: its weights do not match their recorded digest") as err:
        read_checkpoint(tmp_path / "bitrot.pt")
    _one_line(err)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_weights_are_refused(saved, tmp_path, bad):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["model"]["m2.0.conv1.weight"][0, 0, 0, 0] = bad
    payload["digest"] = state_digest(payload["model"])  # a consistent file: only the values are wrong
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"NaN/Inf weights in 1 tensor\(s\), e.g. m2.0.conv1.weight") as err:
        load_checkpoint(tmp_path / "nan.pt")
    _one_line(err)


def test_truncated_checkpoint_is_one_line_without_torch_advice(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not an advlayers checkpoint") as err:
        read_checkpoint(path)
    assert "weights_only=False" not in _one_line(err) and str(path) in str(err.value)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an advlayers checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or not an advlayers checkpoint") as err:
        read_checkpoint(tmp_path / "empty.pt")
    _one_line(err)


def test_pickled_objects_are_refused(tmp_path):
    torch.save(build_model("resnet18", 10, 32, width=WIDTH), tmp_path / "module.pt")  # a whole pickled nn.Module
    with pytest.raises(CheckpointError, match="corrupt or not an advlayers checkpoint") as err:
        read_checkpoint(tmp_path / "module.pt")
    message = _one_line(err)
    assert "weights_only=False" not in message and "holds objects other than tensors" in message


def test_mismatched_checkpoint(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="arch='resnet18', expected 'vgg11_bn'"):
        load_checkpoint(path, arch="vgg11_bn")
    with pytest.raises(CheckpointError, match="dataset='digits', expected 'cifar10'"):
        load_checkpoint(path, dataset="cifar10")
    payload = read_checkpoint(path)
    payload["arch"] = "resnet50"  # weights of one arch labelled as another
    torch.save(payload, tmp_path / "relabelled.pt")
    with pytest.raises(CheckpointError, match="does not fit arch resnet50") as err:
        load_checkpoint(tmp_path / "relabelled.pt")
    _one_line(err)


def test_expected_fields_catch_a_swapped_checkpoint(saved):
    _, path = saved
    # a job asked for the adversarially pretrained net but found the conventional one (meta field)
    with pytest.raises(CheckpointError, match="has pretraining='conventional', expected 'adversarial'") as err:
        load_checkpoint(path, expect={"pretraining": "adversarial"})
    assert str(path) in _one_line(err)
    with pytest.raises(CheckpointError, match="has seed=0, expected 1"):  # top-level field
        load_checkpoint(path, expect={"seed": 1})
    with pytest.raises(CheckpointError, match="has cell=None, expected 'm110000'"):  # a field it lacks
        load_checkpoint(path, expect={"cell": "m110000"})
    model, payload = load_checkpoint(path, arch="resnet18", expect={"pretraining": "conventional", "seed": 0,
                                                                    "width": WIDTH, "cell": None})
    assert payload["meta"]["pretraining"] == "conventional"  # None = not checked


# --------------------------------------------------------------------------- evaluation


def test_evaluate_record(trained_digits_model, digits):
    spec = AttackSpec(0.05, 0.0125, 5)
    rec = evaluate(trained_digits_model, digits.test, spec, n=100, seed=1, progress=False, dataset="digits",
                   arch="resnet18", labels={"seed": 7, "cell": "m110000"})
    for key in ("dataset", "arch", "attack", "eps", "step_size", "steps", "restarts", "random_start", "count",
                "n_eval", "eval_seed", "clean_acc", "clean_acc_lo", "clean_acc_hi", "robust_acc", "robust_acc_lo",
                "robust_acc_hi", "seconds"):
        assert key in rec, key
    assert rec["n_eval"] == 100 and rec["dataset"] == "digits" and rec["steps"] == 5 and rec["attack"] == "PGD-5"
    assert rec["seed"] == 7 and rec["eval_seed"] == 1 and rec["cell"] == "m110000" and "outcomes" not in rec
    assert 0 <= rec["robust_acc"] <= rec["clean_acc"] <= 1 and rec["clean_acc"] > 0.8
    for acc in ("clean_acc", "robust_acc"):
        k = round(rec[acc] * 100)
        assert (rec[f"{acc}_lo"], rec[f"{acc}_hi"]) == pytest.approx(wilson(k, 100))
        assert rec[f"{acc}_lo"] <= rec[acc] <= rec[f"{acc}_hi"]
    again = evaluate(trained_digits_model, digits.test, spec, n=100, seed=1, progress=False)
    assert again["robust_acc"] == rec["robust_acc"], "a seeded evaluation is reproducible"
    clean_only = evaluate(trained_digits_model, digits.test, AttackSpec(0.0, 0.0, 5), n=100, seed=1, progress=False)
    assert clean_only["robust_acc"] == clean_only["clean_acc"] == rec["clean_acc"] and clean_only["attack"] == "clean"
    fgsm = evaluate(trained_digits_model, digits.test, AttackSpec(0.05, 0.0625, 1), n=20, progress=False)
    assert fgsm["attack"] == "FGSM-RS"


@pytest.mark.parametrize("n", [0, -5, 1.5, "100", True])
def test_evaluate_rejects_bad_n(trained_digits_model, digits, n):
    with pytest.raises(ValueError, match=r"^n \(test images to evaluate\) must be an integer") as err:
        evaluate(trained_digits_model, digits.test, AttackSpec(0.05, 0.0125, 1), n=n, progress=False)
    _one_line(err)


def test_outcomes_are_the_seeded_subset_sample_by_sample(trained_digits_model, digits):
    model = trained_digits_model.eval()
    spec = AttackSpec(0.05, 0.0125, 3)
    rec = evaluate(model, digits.test, spec, n=90, seed=3, batch_size=32, progress=False, outcomes=True)
    out = rec["outcomes"]
    subset = digits.test.subset(90, seed=3)
    assert out["test_index"].tolist() == subset.index.tolist()
    assert sorted(set(out["test_index"].tolist())) == out["test_index"].tolist() and out["test_index"].max() >= 90
    assert len(out["clean_correct"]) == len(out["robust_correct"]) == rec["n_eval"] == 90
    assert out["clean_correct"].dtype == bool and out["robust_correct"].dtype == bool
    assert out["clean_correct"].mean() == rec["clean_acc"] and out["robust_correct"].mean() == rec["robust_acc"]
    assert not (out["robust_correct"] & ~out["clean_correct"]).any()
    # each entry is the sample at its test index of the full split
    idx = torch.from_numpy(out["test_index"])
    with torch.no_grad():
        pred = model(digits.test.x[idx].float() / 255).argmax(1)
    assert (pred == digits.test.y[idx]).numpy().tolist() == out["clean_correct"].tolist()
    # the same subset in one batch: the same outcomes for the clean pass
    whole = evaluate(model, digits.test, spec, n=90, seed=3, batch_size=256, progress=False, outcomes=True)
    assert whole["outcomes"]["test_index"].tolist() == out["test_index"].tolist()
    assert whole["outcomes"]["clean_correct"].tolist() == out["clean_correct"].tolist()


def test_dataloader_equals_split(trained_digits_model, digits):
    model = trained_digits_model
    spec = AttackSpec(0.05, 0.0125, 3)
    split = digits.test.subset(100, seed=0)
    x = split.x.float() / 255
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, split.y), batch_size=40, shuffle=False)
    from_split = evaluate(model, split, spec, seed=5, batch_size=40, progress=False, outcomes=True)
    from_loader = evaluate(model, loader, spec, seed=5, batch_size=40, progress=False, outcomes=True)
    for key in ("clean_acc", "robust_acc", "n_eval", "clean_acc_lo", "robust_acc_hi"):
        assert from_loader[key] == from_split[key], key
    for key in ("clean_correct", "robust_correct"):
        assert from_loader["outcomes"][key].tolist() == from_split["outcomes"][key].tolist()
    assert from_loader["outcomes"]["test_index"].tolist() == list(range(100))  # positions in iteration order
    # n counts samples across the loader's batches
    first = evaluate(model, loader, spec, n=50, seed=5, progress=False, outcomes=True)
    assert first["n_eval"] == 50 and first["outcomes"]["test_index"].tolist() == list(range(50))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(model, [], spec, progress=False)


def test_channels_last_evaluation_is_the_same_evaluation(trained_digits_model, digits):
    """eval.channels_last changes the memory layout only: same clean outcomes, the same robust ones up to float
    rounding (at most one image of 100 may flip at a decision boundary), and the record says which layout ran."""
    import copy

    spec = AttackSpec(0.05, 0.0125, 5)
    plain = evaluate(copy.deepcopy(trained_digits_model), digits.test, spec, n=100, seed=1, progress=False,
                     outcomes=True)
    model = copy.deepcopy(trained_digits_model)
    fast = evaluate(model, digits.test, spec, n=100, seed=1, progress=False, outcomes=True, channels_last=True)
    assert plain["channels_last"] is False and fast["channels_last"] is True
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last), "the model was evaluated in channels_last"
    assert (plain["outcomes"]["clean_correct"] == fast["outcomes"]["clean_correct"]).all()
    assert (plain["outcomes"]["robust_correct"] != fast["outcomes"]["robust_correct"]).sum() <= 1
    # the APGD stages (reference code, which views gradients as (n, -1)) run on channels_last models too
    from advlayers.core.evaluation import attack_from_settings

    apgd = attack_from_settings({"attack": "apgd", "eps": 0.05, "step_size": 0.0125, "steps": 2, "apgd_steps": 3})
    plain = evaluate(copy.deepcopy(trained_digits_model), digits.test, apgd, n=40, seed=1, progress=False)
    fast = evaluate(copy.deepcopy(trained_digits_model), digits.test, apgd, n=40, seed=1, progress=False,
                    channels_last=True)
    assert fast["channels_last"] and abs(fast["robust_acc"] - plain["robust_acc"]) <= 1 / 40
