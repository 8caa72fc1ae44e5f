"""Tuning and confirmation images (docs/claims-v2.md): every test split is partitioned once; evaluations,
reinit and features draw from the configured part and record it; tables refuse to mix parts."""

import copy

import pandas as pd
import pytest
import torch

from advlayers.core.attacks import AttackSpec
from advlayers.core.datasets import load_dataset
from advlayers.core.evaluation import evaluate
from advlayers.core.splits import FolderSplit, TensorSplit, image_part
from advlayers.grid import conf, validate
from advlayers.grid.vocabulary import TEST_SIZES, ConfigError, part_size, tuning_size
from advlayers.jobs.evaluate import evaluate_split, eval_images
from advlayers.report import tables

from helpers import REPO, small_net

PGD = {"attack": "pgd", "eps": 0.1, "step_size": 0.05, "steps": 2, "seed": 0, "batch_size": 128}


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


def test_parts_are_disjoint_and_cover_the_split(mnist, digits):
    for data, tuning in ((mnist, 500), (digits, 36)):
        tune = image_part(data.test, "tuning", data.info.name)
        confirm = image_part(data.test, "confirmation", data.info.name)
        assert len(tune) == tuning and len(confirm) == len(data.test) - tuning
        a, b = set(tune.index.tolist()), set(confirm.index.tolist())
        assert not a & b and a | b == set(range(len(data.test)))
        assert confirm.index.tolist() == sorted(b)  # split order
        # each image is the split's image at its recorded position
        assert torch.equal(confirm.x, data.test.x[confirm.index]) and torch.equal(confirm.y, data.test.y[confirm.index])


def test_tuning_part_is_the_500_images_of_every_earlier_result(mnist):
    old = mnist.test.subset(500, seed=0)
    tune = image_part(mnist.test, "tuning", "mnist5k")
    assert torch.equal(tune.index, old.index) and torch.equal(tune.x, old.x) and torch.equal(tune.y, old.y)


def test_tuning_sizes_follow_the_registered_rule():
    assert tuning_size("mnist5k", 1000) == 500
    assert tuning_size("cifar10", 10000) == 1000
    assert tuning_size("imagenette", 3925) == 393
    assert tuning_size("imagenet", 50000) == 5000
    assert part_size("mnist5k", "confirmation") == 500 and part_size("cifar10", "confirmation") == 9000
    assert TEST_SIZES["mnist5k"] == 1000
    with pytest.raises(ConfigError, match="valid choices: confirmation, tuning"):
        part_size("mnist5k", "both")


def test_folder_split_parts(tmp_path):
    samples = [(str(tmp_path / f"{i}.png"), i % 3) for i in range(40)]
    split = FolderSplit(samples, ["a", "b", "c"], num_workers=0)
    tune, confirm = image_part(split, "tuning", "imagenette"), image_part(split, "confirmation", "imagenette")
    assert len(tune) == 4 and len(confirm) == 36
    assert {s for s in tune.samples}.isdisjoint(confirm.samples)
    assert [split.samples[i] for i in confirm.index.tolist()] == confirm.samples


def test_too_small_split_and_bad_part_are_errors():
    tiny = TensorSplit(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="too few"):
        image_part(tiny, "tuning", "cifar10")
    with pytest.raises(ConfigError, match="eval.images"):
        image_part(tiny, "all", "cifar10")


def test_tuning_evaluation_is_bit_identical_to_the_old_one(mnist):
    net = small_net()
    old = evaluate(net, mnist.test, AttackSpec(0.1, 0.05, 2, random_start=True), n=500, seed=0, batch_size=128,
                   progress=False, outcomes=True)
    new = evaluate_split(net, mnist, {**PGD, "images": "tuning", "n": 500})
    assert new["image_part"] == "tuning"
    for key in ("clean_acc", "robust_acc", "n_eval"):
        assert new[key] == old[key]
    for key in ("test_index", "clean_correct", "robust_correct"):
        assert new["outcomes"][key].tolist() == old["outcomes"][key].tolist()


def test_records_carry_their_part_and_draw_from_it(mnist):
    net = small_net()
    tune = set(image_part(mnist.test, "tuning", "mnist5k").index.tolist())
    rec = evaluate_split(net, mnist, {**PGD, "images": "confirmation", "n": None})
    assert rec["image_part"] == "confirmation" and rec["n_eval"] == 500
    assert not tune & set(rec["outcomes"]["test_index"].tolist())
    some = evaluate_split(net, mnist, {**PGD, "n": 50})  # the schema's default part
    assert some["image_part"] == conf.default("datasets", "*", "eval", "images") == "confirmation"
    assert some["n_eval"] == 50 and not tune & set(some["outcomes"]["test_index"].tolist())


def test_n_larger_than_the_part_is_an_error_before_any_compute(mnist):
    with pytest.raises(ValueError, match=r"^eval.n = 501 test images, but the tuning part of mnist5k's test split "
                                         r"has 500; choose n <= 500 or null"):
        eval_images(mnist, {**PGD, "images": "tuning", "n": 501})


def _demo_config():
    return validate.load(REPO / "config" / "config.yaml")


@pytest.mark.parametrize("where, edit", [
    ("datasets.mnist5k.eval: n = 501", lambda c: c["datasets"]["mnist5k"]["eval"].update(n=501)),
    ("datasets.mnist5k.eval: autoattack.n = 600",
     lambda c: c["datasets"]["mnist5k"].update(autoattack={"n": 600, "version": "standard", "cells": ["pretrained"]})),
    ("analyses.features.eval (over datasets.mnist5k.eval): n_images = 501",
     lambda c: c["analyses"]["features"].update(n_images=501)),
    ("analyses.reinit.eval (over datasets.mnist5k.eval): n = 501",
     lambda c: c["analyses"]["reinit"]["eval"].update(n=501, images="tuning")),
])
def test_config_n_larger_than_the_part_is_a_one_line_config_error(where, edit):
    config = copy.deepcopy(_demo_config())
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate.check(config)
    assert str(err.value).startswith(f"config error: {where} test images") and "\n" not in str(err.value)


def test_analysis_eval_inherits_the_datasets_part_unless_it_names_one():
    config = copy.deepcopy(_demo_config())
    config["datasets"]["mnist5k"]["eval"]["images"] = "tuning"
    assert conf.eval_settings(config, "mnist5k", "reinit")["images"] == "tuning"
    config["analyses"]["reinit"]["eval"]["images"] = "confirmation"
    assert conf.eval_settings(config, "mnist5k", "reinit")["images"] == "confirmation"
    assert conf.autoattack_eval_settings(config, "mnist5k")["images"] == "tuning"
    bad = copy.deepcopy(_demo_config())
    bad["datasets"]["mnist5k"]["eval"]["images"] = "test"
    with pytest.raises(ConfigError, match="images"):
        validate.apply_schema(bad)


def test_tables_refuse_to_mix_parts():
    rows = pd.DataFrame({"dataset": ["mnist5k"] * 3, "arch": ["resnet18"] * 3, "cell": ["a", "b", "c"],
                         "image_part": ["tuning", "confirmation", "tuning"]})
    with pytest.raises(tables.TableError, match=r"mix image parts \['confirmation', 'tuning'\]"):
        tables.one_part(rows, "outcomes")
    same = rows.assign(image_part="confirmation")
    assert tables.one_part(same, "outcomes") is same
    other = rows.assign(arch=["resnet18", "vgg11_bn", "resnet18"])  # one part per (dataset, arch)
    assert len(tables.one_part(other, "outcomes")) == 3
