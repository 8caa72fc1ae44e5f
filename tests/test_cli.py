"""The `advlayers` command end to end (subprocesses of `python -m advlayers`), and `main` in process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advlayers.tools import cli
from advlayers.core.checkpoints import load_checkpoint, save_checkpoint
from advlayers.core.datasets import prepare_dataset
from advlayers.io import sha256_file
from advlayers.core.models import IMAGENET_MEAN, IMAGENET_STD, build_model

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ["--override", "epochs=1", "--override", "train_subset=128", "--override", "batch_size=64",
        "--override", "precision='fp32'"]


def advlayers(*args, check=True):
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-m", "advlayers", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advlayers: error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def in_process(capsys, *args):
    """`cli.main(args)` here (no interpreter start-up): a CompletedProcess-like result."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """`advlayers pretrain` of a resnet18 on digits (1 epoch on 128 images): (data, out, initial, state)."""
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "digits.pt"
    prepare_dataset("digits", None, data)
    out, initial, state = tmp / "ckpt" / "pretrained.pt", tmp / "ckpt" / "init.pt", tmp / "state" / "pretrain.pt"
    advlayers("pretrain", "--data", data, "--arch", "resnet18", "--pretraining", "adversarial", "--recipe", "mnist5k-demo",
              *TINY, "--seed", 3, "--device", "cpu", "--state", state, "--out", out, "--initial", initial,
              "--threads", 1)
    return data, out, initial, state


def test_help_is_short_and_does_not_import_torch():
    proc = advlayers("--help")
    for command in ("eval", "layers", "export", "pretrain", "cost", "verify"):
        assert command in proc.stdout
    for command in ("eval", "layers", "export", "pretrain"):
        assert len(advlayers(command, "--help").stdout.splitlines()) < 30
    code = "import sys, advlayers.tools.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(SRC)))


def test_layers_table():
    out = advlayers("layers", "resnet18").stdout.splitlines()
    rows = [line.split() for line in out[1:-1]]
    assert len(rows) == 21 and "21 layers" in out[-1] and "11,181,642 parameters" in out[-1]
    assert rows[0][:5] == ["0", "m0", "m0.1", "conv1", "m0.2"]
    assert rows[7][:4] == ["7", "m2", "m2.0.downsample.0", "layer2.0.downsample.0"]
    assert rows[20][:5] == ["20", "m5", "m5.2", "fc", "-"]
    narrow = advlayers("layers", "vgg16_bn", "--width", "0.25").stdout.splitlines()
    assert "16 layers" in narrow[-1] and any("features.0" in line for line in narrow)
    assert_one_line_error(advlayers("layers", "resnet19", check=False), "resnet19")


def test_pretrain_writes_checkpoint_and_initial_weights(pretrained):
    data, out, initial, state = pretrained
    model, payload = load_checkpoint(out, arch="resnet18", dataset="digits", expect={"cell": "pretrained"})
    meta = payload["meta"]
    assert payload["seed"] == 3 and payload["epoch"] == 1 and payload["recipe"]["epochs"] == 1
    assert payload["recipe"]["train_subset"] == 128 and payload["recipe"]["precision"] == "fp32"
    assert payload["inputs"] == {"data": {"path": str(data), "sha256": sha256_file(data)}}
    assert payload["provenance"]["torch_version"] == torch.__version__ and payload["provenance"]["precision"] == "fp32"
    assert {k: meta[k] for k in ("pretraining", "retraining", "cell", "retrained_modules", "units", "epochs",
                                 "precision", "channels_last", "world_size")} == {
        "pretraining": "adversarial", "retraining": "none", "cell": "pretrained", "retrained_modules": [],
        "units": [], "epochs": 1, "precision": "fp32", "channels_last": False, "world_size": 1}
    assert len(meta["history"]) == 1
    init_model, init = load_checkpoint(initial, arch="resnet18", dataset="digits", expect={"cell": "initial"})
    assert init["epoch"] == 0 and init["meta"]["epochs"] == 0 and "history" not in init["meta"]
    assert init["inputs"] == payload["inputs"] and init["meta"]["pretraining"] == "adversarial"
    # the initial weights are what training started from, and training changed them
    assert meta["start_digest"] == init["digest"] != payload["digest"]
    assert torch.equal(init_model.m0[1].weight, build_model("resnet18", 10, 32, seed=3).m0[1].weight)
    assert not state.exists()


def test_eval_prints_accuracies_and_writes_json(pretrained, tmp_path):
    data, out, _, _ = pretrained
    record = tmp_path / "eval.json"
    proc = advlayers("eval", out, "--data", data, "--eps", "8/255", "--steps", 5, "--n", 50, "--json", record)
    assert "PGD-5" in proc.stdout and "clean accuracy" in proc.stdout and "robust accuracy" in proc.stdout
    assert "Wilson" in proc.stdout and "2/255" in proc.stdout  # default step size eps/4
    saved = json.loads(record.read_text())
    assert saved["eps"] == pytest.approx(8 / 255) and saved["step_size"] == pytest.approx(2 / 255)
    assert saved["n_eval"] == 50 and saved["clean_acc_lo"] <= saved["clean_acc"] <= saved["clean_acc_hi"]
    assert saved["robust_acc"] <= saved["clean_acc"]
    aa = advlayers("eval", out, "--data", "digits", "--eps", "0.1", "--autoattack", "--n", 6)
    assert "AutoAttack-standard" in aa.stdout and "on 6 test images" in aa.stdout
    # progress while it runs (stderr), then the robust accuracy after each attack of the standard version
    assert "progress per attack" in aa.stderr and "apgd-ce:" in aa.stderr and "still robust" in aa.stderr
    breakdown = aa.stdout[aa.stdout.index("after each attack"):].splitlines()[1:]
    assert [line.split()[0] for line in breakdown] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert "trained on digits for 1 epoch," in aa.stdout


def test_eval_norm_l2_and_untrained_description(pretrained, capsys):
    data, out, initial, _ = pretrained
    l2 = in_process(capsys, "eval", out, "--data", data, "--eps", "0.5", "--norm", "L2", "--apgd", "ce", "--steps", 3,
                    "--n", 8)
    assert l2.returncode == 0 and "APGD-CE-3-L2 (eps 0.5 (L2), 3 steps" in l2.stdout
    assert_one_line_error(in_process(capsys, "eval", out, "--data", data, "--eps", "0.5", "--norm", "L2"),
                          "--norm L2", "--autoattack or --apgd")
    assert_one_line_error(in_process(capsys, "eval", out, "--data", data, "--eps", "0.5", "--norm", "L1"), "--norm")
    # the workflow's eval.attack apgd: PGD, then APGD-CE and APGD-DLR on its survivors, with the breakdown
    ens = in_process(capsys, "eval", out, "--data", data, "--eps", "0.1", "--steps", 2, "--apgd", "ensemble",
                     "--apgd-steps", 2, "--n", 8)
    assert ens.returncode == 0 and "PGD-2+APGD-CE-2+APGD-DLR-2 (eps 0.1, PGD 2 steps of 0.025, APGD 2 steps)" in ens.stdout
    after = ens.stdout[ens.stdout.index("after each attack"):].splitlines()[1:]
    assert [line.split()[0] for line in after] == ["PGD-2", "APGD-CE-2", "APGD-DLR-2"]
    values = [float(line.split()[1].rstrip("%")) for line in after]
    assert values == sorted(values, reverse=True)  # each attack only on the survivors: never more robust
    assert_one_line_error(in_process(capsys, "eval", out, "--data", data, "--eps", "0.5", "--norm", "L2", "--apgd",
                                     "ensemble"), "--apgd ensemble", "--apgd ce|dlr")
    init = in_process(capsys, "eval", initial, "--data", data, "--eps", "0.1", "--steps", 1, "--n", 8)
    assert init.returncode == 0
    first = init.stdout.splitlines()[0]
    assert "untrained" in first and "initial weights (epoch 0)" in first and "trained on" not in first


def test_version(capsys):
    from importlib import metadata

    import advlayers

    proc = in_process(capsys, "--version")
    assert proc.returncode == 0
    try:
        expected = metadata.version("advlayers")
    except metadata.PackageNotFoundError:
        expected = advlayers.__version__
    assert proc.stdout.strip() == f"advlayers {expected}"


def test_export_loads_into_torchvision_with_the_same_logits(pretrained, tmp_path):
    _, out, _, _ = pretrained
    exported = tmp_path / "resnet18_tv.pt"
    proc = advlayers("export", out, exported)
    assert "normalised" in proc.stdout and "ImageNet" in proc.stdout
    from advlayers._torchvision import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(torch.load(exported, weights_only=True), strict=True)
    net.eval()
    model, _ = load_checkpoint(out)
    model.eval()
    x = torch.rand(8, 3, 32, 32)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        diff = (net(normalised) - model(x)).abs().max().item()
    assert diff < 1e-5


def test_export_refuses_vgg_and_narrow_nets(tmp_path, capsys):
    for arch, width, words in (("vgg11_bn", 1.0, ("vgg11_bn", "512*7*7", "instead", "load_checkpoint")),
                               ("resnet18", 0.25, ("width-0.25", "instead", "load_checkpoint", "--width 1"))):
        path = tmp_path / f"{arch}.pt"
        save_checkpoint(path, build_model(arch, 10, 32, seed=0, width=width), dataset="digits", seed=0, epoch=0)
        run = advlayers if arch == "vgg11_bn" else lambda *a, check: in_process(capsys, *a)
        assert_one_line_error(run("export", path, tmp_path / "out.pt", check=False), *words)
        assert not (tmp_path / "out.pt").exists()


def test_bad_input_gives_one_line(tmp_path, pretrained, capsys):
    data, out, _, _ = pretrained
    assert_one_line_error(advlayers("eval", tmp_path / "missing.pt", "--data", "digits", "--eps", "8/255",
                                    check=False), "missing.pt", "does not exist")
    assert_one_line_error(advlayers("eval", out, "--data", "digits", "--eps", "abc", check=False), "--eps", "abc")
    # the same handling in process (no interpreter start-up per case)
    assert_one_line_error(in_process(capsys, "eval", out, "--data", "digits", "--eps", "2"), "eps")
    assert_one_line_error(in_process(capsys, "eval", out, "--data", "digits", "--eps", "0.1", "--autoattack",
                                     "--apgd", "ce"), "exclude")
    assert_one_line_error(in_process(capsys, "eval", out, "--data", tmp_path / "nope.pt", "--eps", "8/255"),
                          "nope.pt")
    assert_one_line_error(in_process(capsys, "eval", out, "--data", "mnist5k", "--eps", "8/255", "--n", "0"), "--n")
    assert_one_line_error(in_process(capsys, "eval", out, "--data", "digits", "--eps", "0.1", "--device", "gpu"),
                          "gpu")
    if not torch.cuda.is_available():
        assert_one_line_error(in_process(capsys, "eval", out, "--data", "digits", "--eps", "0.1", "--device",
                                         "cuda"), "CUDA")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(out.read_bytes()[:1000])
    assert_one_line_error(in_process(capsys, "export", corrupt, tmp_path / "x.pt"), "corrupt")
    assert_one_line_error(in_process(capsys, "pretrain", "--data", data, "--arch", "resnet18", "--pretraining",
                                     "adversarial", "--recipe", "mnist5k-demo", "--override", "epoch=1", "--state",
                                     tmp_path / "s", "--out", tmp_path / "o", "--initial", tmp_path / "i"), "epoch")
    assert_one_line_error(in_process(capsys, "pretrain", "--data", tmp_path / "none.pt", "--arch", "resnet18",
                                     "--pretraining", "adversarial", "--recipe", "mnist5k-demo", "--state", tmp_path / "s",
                                     "--out", tmp_path / "o", "--initial", tmp_path / "i"), "none.pt")
    assert_one_line_error(in_process(capsys, "export", out), "OUT")
    assert in_process(capsys, "verify", "--root", tmp_path / "nowhere").returncode == 2
    # issue 20 G: a folder (a retraining group's) is named as one; 0 attack steps is no attack
    assert_one_line_error(in_process(capsys, "eval", tmp_path, "--data", "digits", "--eps", "0.1"), "is a folder")
    assert_one_line_error(in_process(capsys, "eval", out, "--data", "digits", "--eps", "0.1", "--steps", "0"),
                          "--steps")
    other = in_process(capsys, "eval", out, "--data", "mnist5k", "--eps", "0.1", "--steps", "1", "--n", "8")
    assert other.returncode == 0 and other.stderr.strip() == (f"advlayers: warning: {out} was trained on digits, "
                                                              "evaluated on mnist5k")


def test_main_returns_the_status_in_process(capsys):
    assert cli.main(["layers", "resnet18"]) == 0
    assert "21 layers" in capsys.readouterr().out
    assert cli.main(["eval"]) == 2
    assert "advlayers: error:" in capsys.readouterr().err
    assert cli.main(["layers", "--help"]) == 0
    assert cli.fraction("8/255") == 8 / 255 and cli.fraction(" 0.5 ") == 0.5 and cli.fraction("1e-2") == 0.01
    for bad in ("abc", "1/0", "__import__('os')", ""):
        with pytest.raises(Exception, match="fraction"):
            cli.fraction(bad)
    assert cli.override("precision='fp32'") == ("precision", "fp32")
    assert cli.override("milestones=(30, 60)") == ("milestones", (30, 60))
    assert cli.override("attack=pgd") == ("attack", "pgd")


def test_pretrain_preempted_returns_128_plus_signal(pretrained, tmp_path, capsys, monkeypatch):
    import signal

    from advlayers.core import resume, training

    def preempted(*args, state_path=None, **kwargs):
        raise resume.Preempted(signal.SIGTERM, 0, 1, state_path)

    monkeypatch.setattr(training, "pretrain", preempted)
    data = pretrained[0]
    out = tmp_path / "out.pt"
    proc = in_process(capsys, "pretrain", "--data", data, "--arch", "resnet18", "--pretraining", "conventional", "--recipe",
                      "mnist5k-demo", *TINY, "--width", "0.25", "--device", "cpu", "--state", tmp_path / "s.pt",
                      "--out", out, "--initial", tmp_path / "init.pt")
    assert proc.returncode == 128 + signal.SIGTERM
    assert proc.stderr.strip().splitlines() == [f"advlayers pretrain: preempted by signal {int(signal.SIGTERM)} at epoch 1, "
                                                f"batch 1; state saved to {tmp_path / 's.pt'}"]
    assert (tmp_path / "init.pt").exists() and not out.exists()


def test_pretrain_eval_each_epoch_from_the_command_line(pretrained, tmp_path, capsys, monkeypatch):
    """`--eval-each-epoch JSON` (what the workflow passes, also through torchrun): the checkpoint's history has the
    held-out fields; not a JSON object is a one-line error; the torchrun command carries the settings."""
    import json

    from advlayers.core.checkpoints import read_checkpoint
    from advlayers.jobs import pretrain

    data = pretrained[0]
    settings = {"attack": "pgd", "images": "tuning", "n": 16, "eps": 0.1, "step_size": 0.04, "steps": 2,
                "restarts": 1, "seed": 0, "batch_size": 16}
    common = ["pretrain", "--data", data, "--arch", "resnet18", "--pretraining", "conventional", "--recipe",
              "mnist5k-demo", *TINY, "--state", tmp_path / "s", "--out", tmp_path / "o.pt", "--initial",
              tmp_path / "i.pt", "--device", "cpu"]
    assert_one_line_error(in_process(capsys, *common, "--eval-each-epoch", "[1]"), "JSON object")
    assert_one_line_error(in_process(capsys, *common, "--eval-each-epoch", json.dumps({**settings, "restarts": 3})),
                          "eval_each_epoch.restarts = 3 is not valid; valid choices: 1")
    assert in_process(capsys, *common, "--eval-each-epoch", json.dumps(settings)).returncode == 0
    meta = read_checkpoint(tmp_path / "o.pt")["meta"]
    assert meta["eval_each_epoch"] == settings
    assert meta["history"][0]["heldout_n"] == 16 and meta["history"][0]["heldout_attack"] == "PGD-2"
    commands = []
    monkeypatch.setattr("subprocess.run", lambda command, **kw: commands.append(command) or
                        subprocess.CompletedProcess(command, 0))
    pretrain.run(gpus=2, logfile="log", data="d", overrides={"epochs": 1}, epoch_eval=settings)
    assert f"--eval-each-epoch={json.dumps(settings)}" in commands[0] and "--override=epochs=1" in commands[0]
