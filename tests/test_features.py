import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advlayers.analyses import divergence
from advlayers.analyses import features
from advlayers.core.attacks import AttackSpec, perturb
from advlayers.analyses.divergence import cluster_auroc, detector_test, feature_divergence, image_split, mmd_test
from advlayers.analyses.embedding import EMBED_METHODS, embed, embed_clean_adv
from advlayers.analyses.features import load_activations, sample_activations, save_activations
from advlayers.core.models import build_model

ATTACK = AttackSpec(eps=8 / 255, step_size=4 / 255, steps=2)
CHANNELS = {"m1": 16, "m2": 32, "m3": 64, "m4": 128}  # resnet18 at width 0.25
SPATIAL = {"m1": 8, "m2": 4, "m3": 2, "m4": 1}  # 32 px input
K = 5  # vectors per image asked for: m3 (4 positions) and m4 (1) have fewer
PER_IMAGE = {m: min(K, SPATIAL[m] ** 2) for m in CHANNELS}  # 5, 5, 4, 1


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
    return build_model("resnet18", 10, 32, seed=0, width=0.25).eval()


@pytest.fixture(scope="module")
def sampled(model, split):
    return sample_activations(model, split, n_images=6, vectors_per_image=K, attack=ATTACK, seed=3, batch_size=4)


def _activation(model, module, x):
    captured = {}
    handle = model.get_submodule(module).register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return captured["out"]


def test_modules_import_without_torch_and_without_cycles():
    code = ("import sys; import advlayers.analyses.divergence, advlayers.analyses.embedding, advlayers.analyses.features; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    for order in (("features", "embedding", "divergence"), ("divergence", "embedding", "features")):
        # a cycle shows up as an ImportError for some import orders only
        code = "; ".join(f"import advlayers.analyses.{name}" for name in order)
        subprocess.run([sys.executable, "-c", code], check=True)
    assert EMBED_METHODS == ("tsne", "umap", "trimap")


# --------------------------------------------------------------------------- sampling


def test_sampled_vectors_have_module_shapes(sampled):
    for m, c in CHANNELS.items():
        entry, k = sampled["modules"][m], PER_IMAGE[m]
        assert entry["clean"].shape == entry["adv"].shape == (6 * k, c)
        assert entry["clean"].dtype == np.float32
        assert entry["shape"] == (c, SPATIAL[m], SPATIAL[m]) and entry["vectors_per_image"] == k
        assert entry["image"].tolist() == np.repeat(np.arange(6), k).tolist()  # image-major rows
        assert entry["position"].shape == (6 * k, 2) and entry["position"].max() < SPATIAL[m]
        for image in range(6):  # never a position twice within an image
            assert len({tuple(r) for r in entry["position"][entry["image"] == image]}) == k
    assert sampled["meta"]["arch"] == "resnet18" and sampled["meta"]["attack"]["eps"] == ATTACK.eps
    assert sampled["meta"]["vectors_per_image"] == K and sampled["meta"]["sampling_seed"] == 3


def test_small_maps_give_every_position_once(sampled):
    """(a) A map with fewer positions than vectors_per_image gives each position once, not k draws with
    replacement: m3 (2x2) gives its 4 positions per image, m4 (1x1) its single one."""
    every_m3 = {(h, w) for h in range(2) for w in range(2)}
    m3, m4 = sampled["modules"]["m3"], sampled["modules"]["m4"]
    assert len(m3["clean"]) == 6 * 4 and len(m4["clean"]) == 6
    for image in range(6):
        assert {tuple(r) for r in m3["position"][m3["image"] == image]} == every_m3
    assert m4["position"].tolist() == [[0, 0]] * 6


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
        for row in range(len(entry["image"])):
            image, (h, w) = entry["image"][row], entry["position"][row]
            np.testing.assert_allclose(entry["clean"][row], clean_map[image, :, h, w].numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(entry["adv"][row], adv_map[image, :, h, w].numpy(), rtol=1e-4, atol=1e-5)
    assert np.all(sampled["linf"] <= ATTACK.eps + 1e-6) and np.all(sampled["linf"] > 0)
    assert not np.allclose(sampled["modules"]["m4"]["clean"], sampled["modules"]["m4"]["adv"])


def test_sampling_is_seeded_and_round_trips(model, split, sampled, tmp_path, monkeypatch):
    again = sample_activations(model, split, n_images=6, vectors_per_image=K, attack=ATTACK, seed=3, batch_size=5)
    other = sample_activations(model, split, modules=("m1",), n_images=6, vectors_per_image=K, attack=ATTACK,
                               seed=4, batch_size=4)
    for m in CHANNELS:  # positions do not depend on the batch size
        assert np.array_equal(again["modules"][m]["position"], sampled["modules"][m]["position"])
        np.testing.assert_allclose(again["modules"][m]["clean"], sampled["modules"][m]["clean"], rtol=1e-4, atol=1e-4)
    assert not np.array_equal(other["modules"]["m1"]["position"], sampled["modules"]["m1"]["position"])

    written = []
    atomic_write = features.atomic_write
    monkeypatch.setattr(features, "atomic_write", lambda path, fn: written.append(path) or atomic_write(path, fn))
    path = tmp_path / "acts.npz"
    save_activations(path, sampled)
    assert written == [path]  # through io.atomic_write
    assert [p.name for p in tmp_path.iterdir()] == ["acts.npz"]  # no temporary file left behind
    loaded = load_activations(path)
    assert loaded["meta"] == sampled["meta"]
    for m in CHANNELS:
        for key in ("clean", "adv", "image", "position"):
            assert np.array_equal(loaded["modules"][m][key], sampled["modules"][m][key])
        assert loaded["modules"][m]["shape"] == sampled["modules"][m]["shape"]
        assert loaded["modules"][m]["vectors_per_image"] == PER_IMAGE[m]
    for key in ("label", "pred_clean", "pred_adv", "linf"):
        assert np.array_equal(loaded[key], sampled[key])
    with pytest.raises(ValueError, match="feature map"):
        sample_activations(model, split, modules=("m5",), n_images=2, vectors_per_image=1, attack=ATTACK)


# --------------------------------------------------------------------------- MMD


def _gaussians(n_images, per_image, dim, shift, seed):
    rng = np.random.default_rng(seed)
    clean = rng.normal(size=(n_images * per_image, dim))
    adv = rng.normal(size=(n_images * per_image, dim)) + shift
    return clean.astype(np.float32), adv.astype(np.float32), np.repeat(np.arange(n_images), per_image)


def _clustered_null(n_images, per_image, dim, seed):
    """Null data with strong within-image dependence: an image's clean and adversarial rows share its centre
    and each version has its own offset, both versions drawn alike (exchangeable), plus small row noise."""
    rng = np.random.default_rng(seed)
    centre = np.repeat(rng.normal(size=(n_images, dim)), per_image, axis=0)
    version = [np.repeat(rng.normal(scale=0.7, size=(n_images, dim)), per_image, axis=0) for _ in range(2)]
    clean, adv = (centre + v + 0.2 * rng.normal(size=centre.shape) for v in version)
    return clean, adv, np.repeat(np.arange(n_images), per_image)


def test_mmd_detects_shift_only():
    same_x, same_y, images = _gaussians(30, 10, 8, 0.0, seed=0)
    shift_x, shift_y, _ = _gaussians(30, 10, 8, 0.5, seed=0)
    same = mmd_test(same_x, same_y, x_images=images, y_images=images, n_permutations=200, seed=0)
    shifted = mmd_test(shift_x, shift_y, x_images=images, y_images=images, n_permutations=200, seed=0)
    assert same["mmd_p_value"] > 0.2
    assert shifted["mmd_p_value"] < 0.05
    assert shifted["mmd2"] > 5 * abs(same["mmd2"])
    assert same["n_permutations"] == 200 and 1 / 201 <= same["mmd_p_value"] <= 1


def test_mmd_statistic_is_the_unbiased_estimate():
    x, y, images = _gaussians(6, 4, 3, 0.3, seed=5)
    result = mmd_test(x, y, x_images=images, y_images=images, n_permutations=10, seed=0)
    pooled = np.concatenate([x, y]).astype(np.float64)
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    h2 = np.median(d2[np.triu_indices(len(pooled), 1)])
    k = np.exp(-d2 / h2)
    np.fill_diagonal(k, 0)
    n = len(x)
    expected = k[:n, :n].sum() / (n * (n - 1)) + k[n:, n:].sum() / (n * (n - 1)) - 2 * k[:n, n:].mean()
    assert result["mmd2"] == pytest.approx(expected, rel=1e-9)
    assert result["mmd_bandwidth"] == pytest.approx(np.sqrt(h2))


def test_mmd_interval_is_an_image_bootstrap_of_the_same_statistic():
    """mmd2_lo/hi: percentiles of the unbiased MMD^2 recomputed on whole-image resamples (copies of a row count as
    distinct rows; the bandwidth stays the full sample's), drawn as documented."""
    x, y, images = _gaussians(7, 3, 3, 0.5, seed=6)
    result = mmd_test(x, y, x_images=images, y_images=images, n_permutations=10, seed=0, n_bootstrap=40,
                      bootstrap_seed=7)
    h2 = result["mmd_bandwidth"] ** 2

    def unbiased(a, b):
        k = lambda u, v: np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / h2)  # noqa: E731
        kxx, kyy = k(a, a), k(b, b)
        n, m = len(a), len(b)
        return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * k(a, b).mean())

    x, y = x.astype(np.float64), y.astype(np.float64)
    draws = np.random.default_rng(7).integers(7, size=(40, 7))
    boot = [unbiased(np.concatenate([x[images == i] for i in d]), np.concatenate([y[images == i] for i in d]))
            for d in draws]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert result["mmd2_lo"] == pytest.approx(lo, rel=1e-9) and result["mmd2_hi"] == pytest.approx(hi, rel=1e-9)
    assert result["mmd2_lo"] <= result["mmd2"] <= result["mmd2_hi"]


def test_mmd_permutes_whole_images():
    """(b) With correlated rows within images, a per-row permutation null rejects a true null almost always;
    flipping whole images keeps the test calibrated."""
    image_wise, row_wise = [], []
    for seed in range(12):
        clean, adv, images = _clustered_null(8, 20, 5, seed)
        image_wise.append(mmd_test(clean, adv, x_images=images, y_images=images, seed=seed)["mmd_p_value"])
        rows = np.arange(len(clean))  # every row its own image: the old per-vector permutation
        row_wise.append(mmd_test(clean, adv, x_images=rows, y_images=rows + len(rows), seed=seed)["mmd_p_value"])
    assert np.mean(np.array(row_wise) < 0.05) > 0.8
    assert np.mean(np.array(image_wise) < 0.05) <= 2 / 12
    # seeded: the same draws give the same p-value
    clean, adv, images = _clustered_null(8, 20, 5, 0)
    assert mmd_test(clean, adv, x_images=images, y_images=images, seed=0)["mmd_p_value"] == image_wise[0]


def test_mmd_checks_its_arguments():
    x, y, images = _gaussians(4, 3, 2, 0.0, seed=0)
    with pytest.raises(ValueError, match="x_images"):
        mmd_test(x, y, x_images=images[:-1], y_images=images)
    with pytest.raises(TypeError):
        mmd_test(x, y)  # the image ids are required


# --------------------------------------------------------------------------- detector


def test_detector_auroc_and_image_wise_split():
    clean, adv, images = _gaussians(60, 20, 10, 0.0, seed=1)
    chance = detector_test(clean, adv, images, seed=0)
    assert abs(chance["detector_auroc"] - 0.5) < 0.08
    assert chance["detector_auroc_lo"] < 0.5 < chance["detector_auroc_hi"]
    clean, adv, images = _gaussians(60, 20, 10, 1.0, seed=1)
    separated = detector_test(clean, adv, images, seed=0)
    assert separated["detector_auroc"] > 0.9 and separated["detector_acc"] > 0.8
    assert separated["n_train"] + separated["n_test"] == 2 * len(images)
    assert separated["n_test_images"] == 18
    train, test = image_split(images, test_fraction=0.3, seed=0)
    assert not set(images[train]) & set(images[test])
    assert set(images[train]) | set(images[test]) == set(images)
    assert len(set(images[test])) == 18


def test_cluster_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=300).astype(float)  # many ties
    positive = rng.random(300) < 0.4
    cluster = rng.integers(0, 20, size=300)
    unweighted = cluster_auroc(scores, positive, cluster, np.ones((1, 20)))[0]
    assert unweighted == pytest.approx(roc_auc_score(positive, scores))
    weights = rng.integers(0, 3, size=(2, 20))  # integer weights = rows repeated that often
    for b in range(2):
        repeat = weights[b][cluster]
        expected = roc_auc_score(np.repeat(positive, repeat), np.repeat(scores, repeat))
        assert cluster_auroc(scores, positive, cluster, weights)[b] == pytest.approx(expected)


def _explicit_replicates(clean, adv, images, result, replicates, seed=0, bootstrap_seed=12345):
    """Replicate b by hand: refit the detector, redraw the images, rebuild the resampled rows, sklearn AUROC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = image_split(images, seed=seed)
    detector = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    detector.fit(np.concatenate([clean[train], adv[train]]), np.repeat([0, 1], train.sum()))
    test_images = np.unique(images[test])  # sorted
    draws = np.random.default_rng(bootstrap_seed).integers(len(test_images), size=(1000, len(test_images)))
    for b in replicates:
        rows = np.concatenate([np.flatnonzero(images == test_images[i]) for i in draws[b]])
        scores = detector.decision_function(np.concatenate([clean[rows], adv[rows]]))
        expected = roc_auc_score(np.repeat([0, 1], len(rows)), scores)
        assert result["detector_auroc_boot"][b] == pytest.approx(expected, abs=1e-9)


def test_detector_bootstrap_resamples_held_out_images():
    """(c) detector_auroc_boot are 1,000 cluster-bootstrap replicates over held-out images, from a fixed seed over
    the sorted image ids: a replicate equals sklearn's AUROC on the explicitly resampled images' rows."""
    clean, adv, images = _gaussians(40, 6, 5, 0.4, seed=3)
    result = detector_test(clean, adv, images, seed=0)
    boot = np.array(result["detector_auroc_boot"])
    assert boot.shape == (1000,) and np.isfinite(boot).all()
    assert result["detector_auroc_lo"] == pytest.approx(np.percentile(boot, 2.5))
    assert result["detector_auroc_hi"] == pytest.approx(np.percentile(boot, 97.5))
    assert result["detector_auroc_lo"] < result["detector_auroc"] < result["detector_auroc_hi"]
    _explicit_replicates(clean, adv, images, result, replicates=(0, 1, 999))
    # other bootstrap seed, other draws; same seed, same replicates
    assert detector_test(clean, adv, images, seed=0)["detector_auroc_boot"] == result["detector_auroc_boot"]
    other_draws = detector_test(clean, adv, images, seed=0, bootstrap_seed=1)["detector_auroc_boot"]
    assert other_draws != result["detector_auroc_boot"]


def test_detector_bootstrap_pairs_nets_on_the_same_images():
    """Two nets scored on the same held-out images draw the same images in replicate b, whatever the row
    order or the image ids' order of appearance (draws index the sorted ids)."""
    clean_a, adv_a, images = _gaussians(40, 6, 5, 0.4, seed=3)
    clean_b, adv_b, _ = _gaussians(40, 6, 5, 0.8, seed=4)
    ids = (images * 7919) % 1009  # image ids that are not 0..n-1 in row order
    shuffled = np.random.default_rng(0).permutation(len(ids))
    net_a = detector_test(clean_a, adv_a, ids, seed=0)
    net_b = detector_test(clean_b[shuffled], adv_b[shuffled], ids[shuffled], seed=0)
    _explicit_replicates(clean_a, adv_a, ids, net_a, replicates=(0, 500))
    _explicit_replicates(clean_b[shuffled], adv_b[shuffled], ids[shuffled], net_b, replicates=(0, 500))
    # and the shuffled rows of net A give exactly A's replicates
    same_a = detector_test(clean_a[shuffled], adv_a[shuffled], ids[shuffled], seed=0)
    np.testing.assert_allclose(same_a["detector_auroc_boot"], net_a["detector_auroc_boot"], atol=1e-3)


def test_bootstrap_auroc_is_fast():
    rng = np.random.default_rng(0)
    scores, positive = rng.normal(size=1000), np.repeat([False, True], 500)
    cluster = np.tile(np.repeat(np.arange(50), 10), 2)  # 50 images, 10 clean + 10 adversarial rows each
    times_drawn = np.zeros((1000, 50))
    np.add.at(times_drawn, (np.arange(1000)[:, None], rng.integers(50, size=(1000, 50))), 1)
    t0 = time.perf_counter()
    boot = cluster_auroc(scores, positive, cluster, times_drawn)
    assert time.perf_counter() - t0 < 2 and boot.shape == (1000,)


# --------------------------------------------------------------------------- one module's record


def test_feature_divergence_is_a_flat_record(monkeypatch):
    clean, adv, images = _gaussians(50, 10, 8, 1.0, seed=2)
    seen = {}
    real_mmd_test = divergence.mmd_test
    monkeypatch.setattr(divergence, "mmd_test", lambda x, y, **kw: seen.update(kw) or real_mmd_test(x, y, **kw))
    result = feature_divergence(clean, adv, images, seed=0, max_points=400, max_images=40)
    assert {"mmd2", "mmd_p_value", "n_permutations", "mmd_bandwidth", "detector_auroc", "detector_auroc_lo",
            "detector_auroc_hi", "detector_auroc_boot", "detector_acc", "n_train", "n_test", "seconds"} <= set(result)
    assert all(np.isscalar(v) for k, v in result.items() if k != "detector_auroc_boot")
    assert len(result["detector_auroc_boot"]) == 1000
    assert result["mmd_p_value"] < 0.05 and result["detector_auroc"] > 0.9
    assert result["n_train"] + result["n_test"] == 2 * 40 * 10
    # (d) the MMD gets whole images (all 10 rows each, both conditions) within max_points // 2 rows per side
    x_images, y_images = seen["x_images"], seen["y_images"]
    assert np.array_equal(x_images, y_images) and len(x_images) <= 200
    assert result["mmd_n_images"] == 20 and set(np.bincount(x_images)[np.unique(x_images)]) == {10}


def test_feature_divergence_rejects_bad_inputs():
    clean, adv, images = _gaussians(5, 4, 3, 0.0, seed=0)
    bad = (({"adv": adv[:-1]}, "adv"), ({"image_ids": images[:-1]}, "image_ids"),
           ({"image_ids": np.zeros_like(images)}, "image_ids"), ({"clean": clean[0], "adv": adv[0]}, "clean"))
    for kwargs, name in bad:
        args = {"clean": clean, "adv": adv, "image_ids": images, **kwargs}
        with pytest.raises(ValueError, match=name) as error:
            feature_divergence(args["clean"], args["adv"], args["image_ids"])
        assert "\n" not in str(error.value)


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
    clean, adv, images = _gaussians(10, 6, 6, 2.0, seed=0)
    df = embed_clean_adv(clean, adv, "umap", image_ids=images, seed=0, max_points=60)  # umap is compiled by now
    assert len(df) == 60 and (df["condition"] == "clean").sum() == 30
    assert df.loc[df.condition == "clean", "row"].tolist() == df.loc[df.condition == "adversarial", "row"].tolist()
    assert (df["image"] == images[df["row"]]).all()
    with pytest.raises(ValueError, match="method"):
        embed(clean, "pca")


# --------------------------------------------------------------------------- figures
