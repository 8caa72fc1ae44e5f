import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from advlayers.attacks import AttackSpec, perturb
from advlayers.features import (
    embed,
    embed_clean_adv,
    feature_divergence,
    image_split,
    load_activations,
    mmd_test,
    detector_test,
    sample_activations,
    save_activations,
)
from advlayers.models import build_model

ATTACK = AttackSpec(eps=8 / 255, step_size=4 / 255, steps=2)
CHANNELS = {"m1": 64, "m2": 128, "m3": 256, "m4": 512}  # resnet18


class Split:
    """The slice of the datasets.TensorSplit API that sample_activations uses (kept local on purpose)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def subset(self, n, seed=0):
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return Split(self.x[idx], self.y[idx])

    def batches(self, batch_size, *, shuffle=False, augment=False, generator=None, device="cpu", **_):
        for start in range(0, len(self), batch_size):
            yield self.x[start:start + batch_size].float().div(255).to(device), self.y[start:start + batch_size].to(device)


@pytest.fixture(scope="module")
def split():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images[:64], dtype=torch.float32).unsqueeze(1) / 16
    x = F.interpolate(x, size=32, mode="bilinear").expand(-1, 3, -1, -1)
    return Split((x * 255).round().to(torch.uint8).contiguous(), torch.tensor(digits.target[:64]))


@pytest.fixture(scope="module")
def model():
    return build_model("resnet18", 10, 32, seed=0).eval()


@pytest.fixture(scope="module")
def sampled(model, split):
    return sample_activations(model, split, n_images=6, vectors_per_image=5, attack=ATTACK, seed=3, batch_size=4)


def _activation(model, module, x):
    captured = {}
    handle = model.get_submodule(module).register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return captured["out"]


# --------------------------------------------------------------------------- sampling


def test_sampled_vectors_have_module_shapes(sampled):
    assert sampled["image"].tolist() == np.repeat(np.arange(6), 5).tolist()
    spatial = {"m1": 8, "m2": 4, "m3": 2, "m4": 1}  # 32 px input
    for m, c in CHANNELS.items():
        entry = sampled["modules"][m]
        assert entry["clean"].shape == entry["adv"].shape == (30, c)
        assert entry["clean"].dtype == np.float32
        assert entry["shape"] == (c, spatial[m], spatial[m])
        assert entry["position"].shape == (30, 2) and entry["position"].max() < spatial[m]
    # m1 has 64 positions >= 5: drawn without replacement within an image
    for image in range(6):
        rows = sampled["modules"]["m1"]["position"][image * 5:(image + 1) * 5]
        assert len({tuple(r) for r in rows}) == 5
    assert sampled["meta"]["arch"] == "resnet18" and sampled["meta"]["attack"]["eps"] == ATTACK.eps


def test_sampled_vectors_are_the_activations_at_their_positions(model, split, sampled):
    subset = split.subset(6, seed=3)
    x, y = next(subset.batches(6))
    # the attack is replayed exactly: same generator seed and the same batches of 4 as in sample_activations
    generator = torch.Generator().manual_seed(3)
    x_adv = torch.cat([perturb(model, x[:4], y[:4], ATTACK, generator=generator),
                       perturb(model, x[4:], y[4:], ATTACK, generator=generator)])
    assert sampled["label"].tolist() == y.tolist()
    for m in CHANNELS:
        entry = sampled["modules"][m]
        clean_map, adv_map = _activation(model, m, x), _activation(model, m, x_adv)
        for row in range(30):
            image, (h, w) = sampled["image"][row], entry["position"][row]
            np.testing.assert_allclose(entry["clean"][row], clean_map[image, :, h, w].numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(entry["adv"][row], adv_map[image, :, h, w].numpy(), rtol=1e-4, atol=1e-5)
    assert np.all(sampled["linf"] <= ATTACK.eps + 1e-6) and np.all(sampled["linf"] > 0)
    assert (x_adv - x).abs().max() <= ATTACK.eps + 1e-6
    assert not np.allclose(sampled["modules"]["m4"]["clean"], sampled["modules"]["m4"]["adv"])


def test_sampling_is_seeded_and_round_trips(model, split, sampled, tmp_path):
    again = sample_activations(model, split, n_images=6, vectors_per_image=5, attack=ATTACK, seed=3, batch_size=4)
    other = sample_activations(model, split, modules=("m1",), n_images=6, vectors_per_image=5, attack=ATTACK,
                               seed=4, batch_size=4)
    for m in CHANNELS:
        for key in ("clean", "adv", "position"):
            assert np.array_equal(again["modules"][m][key], sampled["modules"][m][key])
    assert not np.array_equal(other["modules"]["m1"]["position"], sampled["modules"]["m1"]["position"])
    path = tmp_path / "acts.npz"
    save_activations(path, sampled)
    assert [p.name for p in tmp_path.iterdir()] == ["acts.npz"]  # no temporary file left behind
    loaded = load_activations(path)
    assert loaded["meta"] == sampled["meta"]
    for m in CHANNELS:
        for key in ("clean", "adv", "position"):
            assert np.array_equal(loaded["modules"][m][key], sampled["modules"][m][key])
        assert loaded["modules"][m]["shape"] == sampled["modules"][m]["shape"]
    for key in ("image", "label", "pred_clean", "pred_adv", "linf"):
        assert np.array_equal(loaded[key], sampled[key])
    with pytest.raises(ValueError, match="feature map"):
        sample_activations(model, split, modules=("m5",), n_images=2, vectors_per_image=1, attack=ATTACK)


# --------------------------------------------------------------------------- two-sample statistics


def _gaussians(n_images, per_image, dim, shift, seed):
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(n_images * per_image, dim))
    adv = rng.normal(size=(n_images * per_image, dim)) + shift
    return clean.astype(np.float32), adv.astype(np.float32), np.repeat(np.arange(n_images), per_image)


def test_mmd_detects_shift_only():
    same_x, same_y, _ = _gaussians(30, 10, 8, 0.0, seed=0)
    shift_x, shift_y, _ = _gaussians(30, 10, 8, 0.5, seed=0)
    same = mmd_test(same_x, same_y, n_permutations=200, seed=0)
    shifted = mmd_test(shift_x, shift_y, n_permutations=200, seed=0)
    assert same["mmd_p_value"] > 0.2
    assert shifted["mmd_p_value"] < 0.05
    assert shifted["mmd2"] > 5 * abs(same["mmd2"])
    assert same["n_permutations"] == 200 and 1 / 201 <= same["mmd_p_value"] <= 1


def test_detector_auroc_and_image_wise_split():
    clean, adv, images = _gaussians(60, 20, 10, 0.0, seed=1)
    chance = detector_test(clean, adv, images, seed=0)
    assert abs(chance["detector_auroc"] - 0.5) < 0.08
    clean, adv, images = _gaussians(60, 20, 10, 1.0, seed=1)
    separated = detector_test(clean, adv, images, seed=0)
    assert separated["detector_auroc"] > 0.9 and separated["detector_acc"] > 0.8
    assert separated["n_train"] + separated["n_test"] == 2 * len(images)
    train, test = image_split(images, test_fraction=0.3, seed=0)
    assert not set(images[train]) & set(images[test])
    assert set(images[train]) | set(images[test]) == set(images)
    assert len(set(images[test])) == 18


def test_feature_divergence_is_a_flat_record():
    clean, adv, images = _gaussians(50, 10, 8, 1.0, seed=2)
    result = feature_divergence(clean, adv, images, seed=0, max_points=400, max_images=40)
    assert {"mmd2", "mmd_p_value", "n_permutations", "detector_auroc", "detector_acc", "n_train", "n_test"} <= set(result)
    assert all(np.isscalar(v) for v in result.values())
    assert result["mmd_p_value"] < 0.05 and result["detector_auroc"] > 0.9
    assert result["n_train"] + result["n_test"] == 2 * 40 * 10


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("method", ["tsne", "umap", "trimap"])
def test_embed_returns_finite_2d_coordinates(method):
    vectors = np.random.default_rng(0).normal(size=(150, 12)).astype(np.float32)
    coords, kept = embed(vectors, method, seed=0, max_points=100)
    assert coords.shape == (100, 2) and np.isfinite(coords).all()
    assert len(set(kept)) == 100 and kept.max() < 150
    coords, kept = embed(vectors[:60], method, seed=0, max_points=100)
    assert coords.shape == (60, 2) and np.array_equal(kept, np.arange(60))


def test_embed_clean_adv_pairs_rows():
    clean, adv, _ = _gaussians(10, 6, 6, 2.0, seed=0)
    df = embed_clean_adv(clean, adv, "umap", seed=0, max_points=60)  # umap is compiled by now: fast
    assert len(df) == 60 and (df["condition"] == "clean").sum() == 30
    assert df.loc[df.condition == "clean", "row"].tolist() == df.loc[df.condition == "adversarial", "row"].tolist()
    with pytest.raises(ValueError, match="method"):
        embed(clean, "pca")


# --------------------------------------------------------------------------- figures


def test_feature_plots_write_png_and_pdf(tmp_path):
    from advlayers.analysis_plots import plot_feature_divergence, plot_feature_embeddings

    rng = np.random.default_rng(0)
    frames = []
    for net, shift in (("conventional", 3.0), ("adversarial", 0.3)):
        for i, module in enumerate(("m1", "m2", "m3", "m4")):
            for condition, offset in (("clean", 0.0), ("adversarial", shift * (i + 1) / 4)):
                xy = rng.normal(size=(300, 2)) + offset
                frames.append(pd.DataFrame({"net": net, "module": module, "condition": condition,
                                            "x": xy[:, 0], "y": xy[:, 1]}))
    plot_feature_embeddings(pd.concat(frames), tmp_path / "emb.png", tmp_path / "emb.pdf")
    divergence = pd.DataFrame([{"net": net, "module": m, "mmd2": s * (i + 1) / 10, "detector_auroc": 0.5 + s / 8 * (i + 1) / 4}
                               for net, s in (("conventional", 3.0), ("adversarial", 0.5)) for i, m in enumerate(("m1", "m2", "m3", "m4"))])
    plot_feature_divergence(divergence, tmp_path / "div.png", tmp_path / "div.pdf")
    for name in ("emb.png", "emb.pdf", "div.png", "div.pdf"):
        assert (tmp_path / name).stat().st_size > 1000
