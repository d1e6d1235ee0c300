"""Linear probe against what the data construction guarantees: separable blobs with a
margin (100 %), Gaussian classes with a closed-form Bayes accuracy, optimality of the
fitted weights, and the penalty search on pure noise vs informative features."""
import math

import pytest
import torch

from llm2clip.eval import linear_probe as lp
from llm2clip.eval.linear_probe import (fit_logistic_regression, l2_sweep, linear_probe, objective, select_l2,
                                        stratified_split)


def separable_blobs(n, seed, n_classes=4, dim=8, extra_noise_dims=8):
    """Class c sits at 3 e_c plus noise in [-0.5, 0.5]^dim: points are never nearer another
    class's centre (half the centre distance 2.12 > max noise norm 1.41), so the
    nearest-centre rule - a linear classifier - is perfect. Extra dims are pure noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = 3 * torch.eye(dim)[y] + torch.rand(n, dim, generator=g) - 0.5
    return torch.cat([x, torch.randn(n, extra_noise_dims, generator=g)], 1), y


def gaussian_pair(n, seed, dim=10, shift=1.0):
    """Two classes N(+-shift e_0, I): Bayes accuracy = Phi(shift)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, dim, generator=g)
    x[:, 0] += shift * (2 * y - 1)
    return x, y


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: on a shared 2-core machine, thread hand-offs cost more than
    the arithmetic (seconds instead of milliseconds per fit)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BAYES = 100 * 0.5 * (1 + math.erf(1.0 / math.sqrt(2)))  # Phi(1) = 84.13 %


def test_separable_blobs_are_classified_perfectly():
    train_x, train_y = separable_blobs(200, seed=0)
    test_x, test_y = separable_blobs(400, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y)  # l2 chosen on a held-out split
    assert result["top1"] == 100.0 and result["top5"] == 100.0
    assert result["n_train"] == 200 and result["n_test"] == 400 and result["solver"] == "lbfgs"
    assert result["l2"] in lp.DEFAULT_L2_CANDIDATES


def test_gaussian_classes_reach_the_bayes_accuracy():
    train_x, train_y = gaussian_pair(2000, seed=0)
    test_x, test_y = gaussian_pair(4000, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y)
    # Test-set sampling noise is about 0.6 points; the fitted direction adds little for n >> d.
    assert abs(result["top1"] - BAYES) < 2.5, result


def test_lbfgs_solution_is_a_stationary_point():
    x, y = gaussian_pair(500, seed=2, dim=6)
    y = y + 2 * (x[:, 1] > 0)  # four classes
    model = fit_logistic_regression(x, y, l2=1e-2)
    weight, bias = model.weight.clone().requires_grad_(), model.bias.clone().requires_grad_()
    loss = objective(lp.LinearClassifier(model.mean, model.std, weight, bias), (x - model.mean) / model.std, y, 1e-2)
    loss.backward()
    assert weight.grad.norm() < 1e-4 and bias.grad.norm() < 1e-4
    # Standardisation uses the training statistics.
    assert torch.allclose(model.mean, x.mean(0)) and torch.allclose(model.std, x.std(0, unbiased=False))


def test_sgd_solver_is_used_and_reaches_the_same_objective(monkeypatch):
    def no_lbfgs(*args, **kwargs):
        raise AssertionError("solver='sgd' must not run L-BFGS")

    x, y = gaussian_pair(2000, seed=0)
    exact = fit_logistic_regression(x, y, l2=1e-3)
    monkeypatch.setattr(torch.optim, "LBFGS", no_lbfgs)
    approx = fit_logistic_regression(x, y, l2=1e-3, solver="sgd", epochs=40, batch_size=256, lr=0.05)
    standardised = (x - exact.mean) / exact.std
    best, reached = objective(exact, standardised, y, 1e-3).item(), objective(approx, standardised, y, 1e-3).item()
    assert best <= reached < best + 5e-3

    test_x, test_y = gaussian_pair(4000, seed=1)
    result = linear_probe(x, y, test_x, test_y, solver="sgd", epochs=40, batch_size=256, lr=0.05)
    assert result["solver"] == "sgd" and abs(result["top1"] - BAYES) < 2.5
    sep = linear_probe(*separable_blobs(200, 0), *separable_blobs(400, 1), l2=1e-4, solver="sgd", batch_size=32)
    assert sep["top1"] == 100.0


def test_penalty_search_prefers_strong_penalty_on_noise():
    """On pure noise the best held-out prediction is the class prior, which only the largest
    penalty (W ~ 0) gives; informative features need a weak penalty to be used."""
    g = torch.Generator().manual_seed(0)
    noise_x, noise_y = torch.randn(300, 40, generator=g), torch.randint(0, 3, (300,), generator=g)
    informative_x, informative_y = separable_blobs(300, seed=3)
    candidates = (1e-4, 1e-2, 1.0, 100.0)
    on_noise = select_l2(noise_x, noise_y, candidates=candidates, criterion="loss")
    on_signal = select_l2(informative_x, informative_y, candidates=candidates, criterion="loss")
    assert on_noise == 100.0 and on_signal <= 1e-2
    assert select_l2(informative_x, informative_y, candidates=candidates) <= 1.0  # by accuracy, then loss
    sweep = l2_sweep(informative_x, informative_y, candidates=candidates)
    assert [row["l2"] for row in sweep] == list(candidates) and sweep[0]["accuracy"] == 100.0


def test_deterministic_given_seed():
    args = (*gaussian_pair(300, 0), *gaussian_pair(300, 1))
    assert linear_probe(*args, seed=3) == linear_probe(*args, seed=3)
    sgd = dict(solver="sgd", epochs=3, batch_size=64, l2=1e-3)
    assert linear_probe(*args, seed=3, **sgd) == linear_probe(*args, seed=3, **sgd)


def test_stratified_split():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2])
    fit, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(16))
    assert torch.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]  # the singleton stays in fit


def test_errors():
    x, y = gaussian_pair(20, 0)
    with pytest.raises(ValueError, match="dimension 10 but test features 9"):
        linear_probe(x, y, x[:, :9], y, l2=1.0)
    with pytest.raises(ValueError, match="solver"):
        linear_probe(x, y, x, y, l2=1.0, solver="newton")
    with pytest.raises(ValueError, match="one class index per sample"):
        linear_probe(x, y[:5], x, y, l2=1.0)
