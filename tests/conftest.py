"""Shared fixtures: small real data, a trained net, and one copy of the repository with the tiny workflow run
once (read-only: tests that change files work on their own copy of it, `helpers.copy_of`). What tests import
lives in helpers.py."""

from __future__ import annotations

import pytest
from advlayers.core.datasets import load_dataset
from advlayers.core.recipes import get_recipe
from advlayers.core.training import pretrain

from helpers import TARGETS, WIDTH, copy_repo, fake_paper_roots, snakemake


@pytest.fixture(scope="session")
def digits():
    """sklearn's real 8x8 digits at 32 px (1,437 train / 360 test): small enough for unit tests."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """A narrow resnet18 trained conventionally on digits for 4 epochs (~95% clean test accuracy)."""
    recipe = get_recipe("mnist5k-demo", epochs=4, batch_size=64, precision="fp32")
    return pretrain("resnet18", digits, recipe, mode="conventional", seed=0, progress=False, width=WIDTH).model.eval()


@pytest.fixture(scope="session")
def repo_copy(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("repo"))
    fake_paper_roots(root)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A copy of the repository where the tiny workflow has run once (all figures, tables and claims).
    Read-only for tests: copy it (`copy_of`) to change anything."""
    root = copy_repo(tmp_path_factory.mktemp("tiny"))
    snakemake(root, *TARGETS, "--cores", "2", "--configfile", "tiny.yaml")
    return root
