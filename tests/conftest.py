import pytest
import torch

from advlayers.datasets import load_dataset
from advlayers.training import get_recipe, pretrain

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    """sklearn's real 8x8 digits at 32 px (1,437 train / 360 test): small enough for unit tests."""
    return load_dataset("digits")


def tiny_recipe(**overrides):
    base = dict(epochs=1, batch_size=64, train_subset=256, eps=0.1, step_size=0.04, steps=2,
                precision="fp32", channels_last=False)
    base.update(overrides)
    return get_recipe("mnist5k-demo", **base)


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """A resnet18 trained conventionally on digits for 3 epochs (~99% clean test accuracy)."""
    recipe = get_recipe("mnist5k-demo", epochs=3, batch_size=64, precision="fp32", channels_last=False)
    return pretrain("resnet18", digits, recipe, mode="conventional", seed=0, progress=False).model.eval()
