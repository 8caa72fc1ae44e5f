"""Training curves: the table from the checkpoints' per-epoch histories, its figure, the TensorBoard export."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import yaml

from advlayers.grid import layout, plan, validate
from advlayers.grid.vocabulary import Setting
from advlayers.io import read_table
from advlayers.report import tables
from advlayers.report.figures import FIGURES, save_figure
from advlayers.report.training_curves import HistoryError, checkpoint_files, table_from_payloads
from advlayers.tools import tb_export
from advlayers.tools.cli import main
from helpers import TINY, small_net


def history(losses, acc0=0.3):
    return [{"epoch": i + 1, "loss": loss, "train_acc": acc0 + 0.1 * i, "lr": 0.1 / (i + 1), "seconds": 2.0 + i}
            for i, loss in enumerate(losses)]


def payload(cell="pretrained", seed=0, pretraining="conventional", hist=None):
    retraining = "none" if cell == "pretrained" else ("adversarial" if pretraining == "conventional" else "conventional")
    return {"dataset": "mnist5k", "arch": "resnet18", "seed": seed,
            "meta": {"pretraining": pretraining, "retraining": retraining, "cell": cell,
                     "history": history([1.0, 0.6, 0.4]) if hist is None else hist}}


def test_table_one_row_per_net_and_epoch_pretrained_first():
    payloads = {"b": payload("m110000", hist=history([2.0, 1.5])), "a": payload(), "c": payload(seed=1),
                "d": payload(pretraining="adversarial", hist=[]),  # e.g. imported published weights: no rows
                "e": payload("m110000", pretraining="adversarial")}
    t = table_from_payloads(payloads)
    assert list(t.columns) == ["dataset", "arch", "seed", "pretraining", "retraining", "cell", "epoch", "loss",
                               "train_acc", "lr", "seconds", "heldout_clean_acc", "heldout_robust_acc",
                               "heldout_attack", "heldout_eps", "heldout_n", "heldout_seconds"]
    assert t["heldout_clean_acc"].isna().all()  # no per-epoch evaluation in these histories
    assert len(t) == 3 + 2 + 3 + 3
    seed0 = t[(t["seed"] == 0) & (t["pretraining"] == "conventional")]
    assert list(seed0["cell"]) == ["pretrained"] * 3 + ["m110000"] * 2
    assert list(seed0["epoch"]) == [1, 2, 3, 1, 2] and list(seed0["loss"]) == [1.0, 0.6, 0.4, 2.0, 1.5]
    assert t["epoch"].dtype == "int64" and t["loss"].dtype == "float64" and str(t["cell"].dtype) == "string"


@pytest.mark.parametrize("hist, message", [
    ([{"epoch": 1, "loss": 1.0}], "lacks ['train_acc', 'lr', 'seconds']"),
    (history([1.0, 0.5])[::-1], "is of epoch 2"),
    (history([1.0, float("nan")]), "loss nan at epoch 2"),
])
def test_bad_history_is_an_error_naming_the_checkpoint(hist, message):
    with pytest.raises(HistoryError, match="ckpt.pt") as e:
        table_from_payloads({"ckpt.pt": payload(hist=hist)})
    assert message in str(e.value)


def test_a_net_listed_twice_is_an_error():
    with pytest.raises(HistoryError, match="y.pt and x.pt are the same net"):
        table_from_payloads({"x.pt": payload(), "y.pt": payload()})


def _write_checkpoints(root):
    """A pretrained net and one retraining group folder (two cells and a stray file) with histories, saved as
    real checkpoints (relative paths under results/, as the workflow writes them)."""
    from advlayers.core.checkpoints import save_checkpoint

    s = Setting("mnist5k", "resnet18", 0, "conventional")
    pretrained = layout.pretrained_path(s)
    os.makedirs(os.path.dirname(pretrained))
    save_checkpoint(pretrained, small_net(), dataset="mnist5k", seed=0, epoch=3, pretraining="conventional",
                    retraining="none", cell="pretrained", history=history([1.0, 0.7, 0.5]))
    group = layout.group_dir(s, "cutoff0")
    os.makedirs(group)
    for cell in ("m100000", "m110000"):
        save_checkpoint(layout.cell_path(s, "cutoff0", cell), small_net(), dataset="mnist5k", seed=0, epoch=2,
                        pretraining="conventional", retraining="adversarial", cell=cell,
                        history=history([2.0, 1.2], acc0=0.2))
    (root / group / "notes.txt").write_text("not a checkpoint")
    return pretrained, group


def test_table_job_reads_the_checkpoints_of_pretrained_files_and_group_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pretrained, group = _write_checkpoints(tmp_path)
    assert [os.path.basename(f) for f in checkpoint_files([pretrained, group])] == \
        ["pretrained.pt", "m100000.pt", "m110000.pt"]
    out, html = layout.table_path("training_curves"), layout.table_html_path("training_curves")
    tables.run(table="training_curves", parts=[pretrained, group], coordinates=[], out=out, html=html)
    t = read_table(out)  # digests of the table and of every checkpoint it was made from checked
    assert len(t) == 3 + 2 + 2 and set(t["cell"]) == {"pretrained", "m100000", "m110000"}
    assert "<th>train_acc</th>" in open(html).read()
    # the figure: per pretraining a loss and an accuracy panel, one line per net at its recorded epochs only
    fig = FIGURES["training_curves"](t, {"dataset": "mnist5k", "seeds": [0]})
    loss_ax, acc_ax = fig.axes[0], fig.axes[1]
    assert loss_ax.get_ylabel() == "training loss" and acc_ax.get_ylabel() == "training accuracy"
    lines = {tuple(line.get_xdata()): list(line.get_ydata()) for line in loss_ax.get_lines()}
    assert lines[(1, 2, 3)] == [1.0, 0.7, 0.5] and lines[(1, 2)] == [2.0, 1.2]
    assert len(loss_ax.get_lines()) == 3
    save_figure(fig, tmp_path / "f.png", tmp_path / "f.pdf")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_figure_means_over_seeds_with_faint_seed_lines():
    t = table_from_payloads({"a": payload(hist=history([1.0, 0.5])), "b": payload(seed=1, hist=history([0.8, 0.3]))})
    fig = FIGURES["training_curves"](t, {})
    ax = fig.axes[0]
    means = [line for line in ax.get_lines() if line.get_alpha() is None]
    assert len(ax.get_lines()) == 3 and len(means) == 1
    assert list(means[0].get_ydata()) == pytest.approx([0.9, 0.4])


def heldout(hist, clean=(0.5, 0.7), robust=(0.1, 0.3)):
    """A history whose epochs were evaluated on held-out tuning images (`core.epoch_eval.FIELDS`)."""
    return [{**h, "heldout_clean_acc": c, "heldout_robust_acc": r, "heldout_attack": "PGD-10", "heldout_eps": 0.15,
             "heldout_n": 256, "heldout_seconds": 0.1} for h, c, r in zip(hist, clean, robust)]


def test_heldout_accuracy_per_epoch_in_the_table_figure_and_tensorboard(tmp_path):
    """With config eval_each_epoch the table carries each epoch's held-out clean / robust accuracy and the figure
    gets a third row: clean solid, robust dashed, markers at the evaluated epochs only, the attack in the legend."""
    from advlayers.core.epoch_eval import FIELDS
    from advlayers.report.training_curves import HELDOUT

    assert HELDOUT == FIELDS
    t = table_from_payloads({"a": payload(hist=heldout(history([1.0, 0.6]))),
                             "b": payload("m110000", hist=heldout(history([2.0, 1.5]), (0.6, 0.8), (0.2, 0.4))),
                             "c": payload(pretraining="adversarial", hist=history([1.0, 0.8]))})  # not evaluated
    assert list(t["heldout_robust_acc"].iloc[:4]) == [0.1, 0.3, 0.2, 0.4] and t["heldout_n"].iloc[0] == 256
    assert t.loc[t["pretraining"] == "adversarial", "heldout_clean_acc"].isna().all()
    fig = FIGURES["training_curves"](t, {})
    assert len(fig.axes) == 6 and "held-out accuracy" in fig.axes[4].get_ylabel()
    lines = fig.axes[4].get_lines()  # the conventional column's held-out row
    drawn = {(line.get_linestyle(), tuple(line.get_ydata())) for line in lines}
    assert drawn == {("-", (0.5, 0.7)), ("--", (0.1, 0.3)), ("-", (0.6, 0.8)), ("--", (0.2, 0.4))}
    assert all(tuple(line.get_xdata()) == (1, 2) and line.get_marker() == "o" for line in lines)
    assert fig.axes[5].get_lines() == []  # the adversarial net was not evaluated: nothing drawn
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("PGD-10" in label and "256 tuning images" in label for label in labels)
    save_figure(fig, tmp_path / "f.png", tmp_path / "f.pdf")
    if __import__("importlib").util.find_spec("tensorboard"):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        runs = tb_export.write_events(t, tmp_path / "tb")
        acc = EventAccumulator(str(tmp_path / "tb" / runs[0]))
        acc.Reload()
        assert [(e.step, round(e.value, 6)) for e in acc.Scalars("heldout/robust_accuracy")] == [(1, 0.1), (2, 0.3)]


def test_the_grid_builds_the_table_and_the_figure_from_every_training_job():
    config = yaml.safe_load(TINY.read_text())
    validate.apply_schema(config)
    assert "training_curves" in plan.tables(config) and plan.figures(config)[-1] == "training_curves"
    parts = plan.table_inputs(config, "training_curves")
    pretrained = [p for p in parts if layout.parse(p, ("pretrained",))]
    groups = [p for p in parts if layout.parse(p, ("group",))]
    assert len(pretrained) == len(plan.settings(config)) and len(pretrained) + len(groups) == len(parts)
    assert len(groups) == sum(len(g) for g in plan.groups(config).values())
    assert plan.figure_inputs(config, "training_curves") == [layout.table_path("training_curves")]
    assert layout.paper_figure(config, "training_curves") == "Training curves"


def test_tensorboard_without_the_package_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tb_export.importlib.util, "find_spec", lambda name: None)
    assert main(["tensorboard", str(tmp_path / "missing.parquet"), "--logdir", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install" in err and "tensorboard" in err
    assert not (tmp_path / "tb").exists()


def test_tensorboard_events_one_run_per_net(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = table_from_payloads({"a": payload(), "b": payload("m110000", hist=history([2.0, 1.5]))})
    runs = tb_export.write_events(t, tmp_path)
    assert runs == ["mnist5k/resnet18/seed0/conventional",
                    "mnist5k/resnet18/seed0/conventional_then_adversarial/m110000"]
    acc = EventAccumulator(str(tmp_path / runs[1]))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.0), (2, 1.5)]
    assert pd.Series([e.value for e in acc.Scalars("train/accuracy")]).round(6).tolist() == [0.3, 0.4]


def test_caption_renders():
    """workflow/report/figure.rst for the training curves: Jinja then docutils (as `snakemake --report`), no
    reStructuredText error, no attack line (nothing was attacked to draw it)."""
    from pathlib import Path
    from types import SimpleNamespace

    jinja2 = pytest.importorskip("jinja2")
    core = pytest.importorskip("docutils.core")
    template = (Path(__file__).resolve().parents[1] / "workflow" / "report" / "figure.rst").read_text()
    info = {"kind": "training_curves", "dataset": "mnist5k", "seeds": [0, 1, 2]}
    snakemake = SimpleNamespace(params=SimpleNamespace(info=info), wildcards=SimpleNamespace(figure="training_curves"),
                                output=["results/figures/training_curves.png"])
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=snakemake)
    html = core.publish_parts(text, writer="html", settings_overrides={"report_level": 2})["body"]
    assert "System Message" not in html and "system-message" not in html, text
    assert "Training curves" in text and "mnist5k" in text and "Training seeds: 0, 1, 2" in text
    assert "Attack:" not in text and "Wilson" not in text and "Third row" not in text
    info["eval_each_epoch"] = {"mnist5k": {"attack": "pgd", "images": "tuning", "n": 256, "eps": 0.15,
                                           "step_size": 0.0375, "steps": 10, "restarts": 1, "seed": 0,
                                           "batch_size": 256}}
    text = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(snakemake=snakemake)
    html = core.publish_parts(text, writer="html", settings_overrides={"report_level": 2})["body"]
    assert "System Message" not in html and "system-message" not in html, text
    assert "Third row (mnist5k)" in text and "256 held-out\nTUNING images" in text and "PGD-10" in text
