import pytest
import torch
from torch import nn

from advlayers.core import attacks
from advlayers.core.attacks import AttackSpec, fgsm_rs, pgd, predicted_labels, robust_correct

EPS = 0.1


@pytest.fixture(scope="module")
def batch(digits):
    return next(digits.test.batches(200, device="cpu"))


def test_pgd_stays_in_ball_and_box(trained_digits_model, batch):
    x, y = batch
    g = torch.Generator().manual_seed(0)
    x_adv = pgd(trained_digits_model, x, y, eps=EPS, step_size=0.03, steps=5, generator=g)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    x_fast = fgsm_rs(trained_digits_model, x, y, eps=EPS, generator=g)
    assert (x_fast - x).abs().max() <= EPS + 1e-6 and x_fast.min() >= 0 and x_fast.max() <= 1


def test_attack_touches_no_parameter_state(trained_digits_model, batch):
    model = trained_digits_model
    x, y = batch
    model.train()  # the attack must still run in eval mode and restore the caller's mode
    for p in model.parameters():
        p.grad = None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    pgd(model, x, y, eps=EPS, step_size=0.03, steps=2, bn_mode="eval")
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval-mode attack: BN running stats untouched
    model.eval()


def test_keep_mode_uses_batch_statistics_of_train_mode_layers_only(trained_digits_model, batch):
    """bn_mode="keep" leaves the model's modes as they are (training attacks: the trained layers use batch
    statistics and update their running statistics, frozen layers stay in eval mode and are untouched)."""
    model = trained_digits_model
    x, y = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        model.eval()
        model.m1.train()  # as when m1 is retrained and the rest is frozen
        pgd(model, x[:32], y[:32], eps=EPS, step_size=0.03, steps=2, bn_mode="keep")
        after = model.state_dict()
        changed = {k for k in after if not torch.equal(after[k], before[k])}
        assert changed and all(k.startswith("m1.") for k in changed), changed
        assert int(after["m1.1.0.bn1.num_batches_tracked"] - before["m1.1.0.bn1.num_batches_tracked"]) == 2
        assert model.m1.training and not model.m0.training  # modes as they were
    finally:
        model.load_state_dict(before)
        model.eval()


def test_eps_zero_gives_clean_accuracy(trained_digits_model, batch):
    x, y = batch
    clean, robust = robust_correct(trained_digits_model, x, y, AttackSpec(0.0, 0.0, 10))
    assert torch.equal(clean, robust)
    with torch.no_grad():
        assert torch.equal(clean, trained_digits_model(x).argmax(1) == y)


def test_robust_below_clean_and_monotone_in_steps(trained_digits_model, batch):
    x, y = batch
    accs = []
    for steps in (1, 3, 10):
        g = torch.Generator().manual_seed(1)
        clean, robust = robust_correct(trained_digits_model, x, y, AttackSpec(EPS, 0.025, steps), generator=g)
        assert not (robust & ~clean).any(), "a sample misclassified clean can never count as robust"
        accs.append(robust.float().mean().item())
    assert clean.float().mean() > 0.85
    # any-step counting with the same random start: iterate k of the longer run equals iterate k of the
    # shorter one for the samples still alive, so more steps can only break more samples.
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] < clean.float().mean().item()


def test_any_step_never_above_final_iterate(trained_digits_model, batch):
    x, y = batch
    spec = AttackSpec(EPS, 0.025, 5)
    _, any_ = robust_correct(trained_digits_model, x, y, spec, count="any", generator=torch.Generator().manual_seed(2))
    _, final = robust_correct(trained_digits_model, x, y, spec, count="final", generator=torch.Generator().manual_seed(2))
    assert not (any_ & ~final).any()


def test_restarts_only_lower_accuracy(trained_digits_model, batch):
    x, y = batch
    _, one = robust_correct(trained_digits_model, x, y, AttackSpec(EPS, 0.025, 3, restarts=1),
                            generator=torch.Generator().manual_seed(3))
    _, three = robust_correct(trained_digits_model, x, y, AttackSpec(EPS, 0.025, 3, restarts=3),
                              generator=torch.Generator().manual_seed(3))
    assert not (three & ~one).any()


def test_predicted_labels_are_the_argmax(trained_digits_model, batch):
    x, _ = batch
    with torch.no_grad():
        assert torch.equal(predicted_labels(trained_digits_model, x), trained_digits_model(x).argmax(1))


def test_matches_torchattacks(trained_digits_model, digits):
    torchattacks = pytest.importorskip("torchattacks")
    model = trained_digits_model.eval()
    eps, alpha, steps = 0.02, 0.005, 10  # a radius where the model is partly robust
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    ours_correct = theirs_correct = n = 0
    for i, (x, y) in enumerate(digits.test.batches(180)):
        # Same seed for both random starts: torchattacks draws from the global RNG, we from a generator.
        _, robust = robust_correct(model, x, y, AttackSpec(eps, alpha, steps), count="final",
                                   generator=torch.Generator().manual_seed(i))
        torch.manual_seed(i)
        x_theirs = atk(x, y)
        with torch.no_grad():
            theirs = model(x_theirs).argmax(1) == y
        ours_correct += int(robust.sum())
        theirs_correct += int(theirs.sum())
        n += y.numel()
    ours, theirs = ours_correct / n, theirs_correct / n
    assert 0.05 < theirs < 0.95, "the comparison needs a model that is neither broken nor fully robust"
    assert abs(ours - theirs) <= 0.01 + 1e-9, (ours, theirs)
    # any-step counting is at most the final-iterate accuracy
    _, any_step = robust_correct(model, *next(digits.test.batches(360)), AttackSpec(eps, alpha, steps),
                                 generator=torch.Generator().manual_seed(0))
    assert any_step.float().mean().item() <= ours + 0.01


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-0.1, step_size=0.01, steps=1), "eps .* must be >= 0"),
    (dict(eps=5, step_size=0.01, steps=1), r"eps \(an L-inf radius in \[0,1\] pixel units, e.g. 8/255\) must be <= 1, got 5"),
    (dict(eps="8/255", step_size=0.01, steps=1), "eps .* must be a number, got '8/255'"),
    (dict(eps=True, step_size=0.01, steps=1), "eps .* must be a number, got True"),
    (dict(eps=float("inf"), step_size=0.01, steps=1), "eps .* must be finite"),
    (dict(eps=0.1, step_size=2, steps=1), "step_size must be <= 1"),
    (dict(eps=0.1, step_size="0.01", steps=1), "step_size must be a number"),
    (dict(eps=0.1, step_size=0.01, steps=-1), "steps must be an integer >= 0"),
    (dict(eps=0.1, step_size=0.01, steps=7.0), "steps must be an integer, got 7.0"),
    (dict(eps=0.1, step_size=0.01, steps=True), "steps must be an integer, got True"),
    (dict(eps=0.1, step_size=0.01, steps=1, restarts=0), "restarts must be an integer >= 1"),
])
def test_bad_attack_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        AttackSpec(**kwargs)
    assert "\n" not in str(err.value)


def test_pgd_eps_as_a_string_is_a_one_line_error(batch):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match="eps") as err:
        pgd(net, *batch, eps="8/255", step_size=2 / 255, steps=1)
    assert "\n" not in str(err.value) and "8/255" in str(err.value) and "0.0313725" in str(err.value)
    with pytest.raises(ValueError, match="eps"):
        fgsm_rs(net, *batch, eps=5)


@pytest.mark.parametrize("scale, shift", [(255.0, 0.0), (1.0, -0.5)])  # [0, 255] pixels; normalised inputs
def test_inputs_outside_unit_box_are_refused(trained_digits_model, batch, scale, shift):
    x, y = batch
    bad = x * scale + shift
    assert bad.min() < 0 or bad.max() > 1
    spec = AttackSpec(EPS, 0.025, 1)
    for attack in (lambda: pgd(trained_digits_model, bad, y, eps=EPS, step_size=0.025, steps=1),
                   lambda: fgsm_rs(trained_digits_model, bad, y, eps=EPS),
                   lambda: robust_correct(trained_digits_model, bad, y, spec)):
        with pytest.raises(ValueError, match=r"attack inputs must be images in \[0, 1\]") as err:
            attack()
        assert "\n" not in str(err.value)
    # the boundary values themselves are valid images
    edge = torch.cat([torch.zeros_like(x[:2]), torch.ones_like(x[:2])])
    assert pgd(trained_digits_model, edge, y[:4], eps=EPS, step_size=0.025, steps=1).shape == edge.shape


def test_bad_bn_mode(batch):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    for mode in ("frozen", "train"):
        with pytest.raises(ValueError, match=f"unknown bn_mode '{mode}'; valid choices: eval, keep"):
            pgd(net, *batch, eps=0.1, step_size=0.1, steps=1, bn_mode=mode)


def test_folded_batchnorm_same_function_model_untouched(trained_digits_model, batch):
    model = trained_digits_model.eval()
    x, y = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with attacks.attack_mode(model):
        folded = attacks.folded_for_attack(model)
        assert folded is not model
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 20  # resnet18 keeps its BatchNorms
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.parameters())
    # BatchNorm in train mode (batch statistics) is never folded
    model.train()
    with attacks.attack_mode(model, "keep"):
        assert attacks.folded_for_attack(model) is model
    model.eval()
    # a model that is not a ModularNet is used as it is
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    assert attacks.folded_for_attack(plain) is plain


def test_fold_bn_does_not_change_the_attack(trained_digits_model, batch):
    x, y = batch
    spec = AttackSpec(EPS, 0.025, 5)
    a = attacks.perturb(trained_digits_model, x, y, spec, generator=torch.Generator().manual_seed(4))
    b = attacks.perturb(trained_digits_model, x, y, spec, generator=torch.Generator().manual_seed(4), fold_bn=False)
    assert (a != b).float().mean() < 0.01  # only gradient signs within float rounding of 0 may differ
    _, r1 = robust_correct(trained_digits_model, x, y, spec, generator=torch.Generator().manual_seed(4))
    _, r2 = robust_correct(trained_digits_model, x, y, spec, generator=torch.Generator().manual_seed(4), fold_bn=False)
    assert abs(r1.float().mean() - r2.float().mean()) <= 0.01
