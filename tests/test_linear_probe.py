"""Linear probe against what the data construction guarantees: separable blobs with a
margin (100 %), Gaussian classes with a closed-form Bayes accuracy, optimality of the
fitted weights, the penalty search on pure noise vs informative features, and the
paper's SGD (§4.2.3) against a momentum loop written out by hand."""
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


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_separable_blobs_are_classified_perfectly(solver):
    train_x, train_y = separable_blobs(200, seed=0)
    test_x, test_y = separable_blobs(400, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, solver=solver)
    assert result["top1"] == 100.0 and result["top5"] == 100.0
    assert result["n_train"] == 200 and result["n_test"] == 400 and result["solver"] == solver
    if solver == "lbfgs":
        assert result["l2"] in lp.DEFAULT_L2_CANDIDATES  # chosen on a held-out split
    else:
        assert result["l2"] == 0.0  # §4.2.3: weight decay 0


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_gaussian_classes_reach_the_bayes_accuracy(solver):
    train_x, train_y = gaussian_pair(2000, seed=0)
    test_x, test_y = gaussian_pair(4000, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y, solver=solver)
    # Test-set sampling noise is about 0.6 points; the fitted direction adds little for n >> d.
    assert abs(result["top1"] - BAYES) < 2.5, result


def test_lbfgs_solution_is_a_stationary_point():
    x, y = gaussian_pair(500, seed=2, dim=6)
    y = y + 2 * (x[:, 1] > 0)  # four classes
    model = fit_logistic_regression(x, y, l2=1e-2, solver="lbfgs")
    weight, bias = model.weight.clone().requires_grad_(), model.bias.clone().requires_grad_()
    loss = objective(lp.LinearClassifier(model.mean, model.std, weight, bias), (x - model.mean) / model.std, y, 1e-2)
    loss.backward()
    assert weight.grad.norm() < 1e-4 and bias.grad.norm() < 1e-4
    # Standardisation uses the training statistics.
    assert torch.allclose(model.mean, x.mean(0)) and torch.allclose(model.std, x.std(0, unbiased=False))


def momentum_loop_by_hand(x, y, n_classes, epochs, lr=0.1, momentum=0.9):
    """Full-batch gradient descent with heavy-ball momentum on the softmax cross-entropy,
    the gradient written out (no autograd, no torch.optim): v = m v + g, w = w - lr v."""
    x = ((x - x.mean(0)) / x.std(0, unbiased=False)).double()
    onehot = torch.eye(n_classes, dtype=torch.float64)[y]
    weight, bias = torch.zeros(x.shape[1], n_classes, dtype=torch.float64), torch.zeros(n_classes, dtype=torch.float64)
    v_weight, v_bias = torch.zeros_like(weight), torch.zeros_like(bias)
    for _ in range(epochs):
        error = torch.softmax(x @ weight + bias, dim=1) - onehot
        v_weight = momentum * v_weight + x.T @ error / len(x)
        v_bias = momentum * v_bias + error.mean(0)
        weight, bias = weight - lr * v_weight, bias - lr * v_bias
    return weight, bias


def test_sgd_with_one_batch_equals_a_momentum_loop_written_by_hand():
    x, y = gaussian_pair(300, seed=4, dim=5)
    y = y + 2 * (x[:, 1] > 0)  # four classes
    model = fit_logistic_regression(x, y, l2=0.0, solver="sgd", batch_size=len(x))  # lr, momentum, epochs: §4.2.3
    weight, bias = momentum_loop_by_hand(x, y, 4, epochs=50)
    torch.testing.assert_close(model.weight.double(), weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.bias.double(), bias, atol=1e-4, rtol=1e-4)


def test_sgd_runs_the_papers_hyperparameters_in_minibatches(monkeypatch):
    """§4.2.3: SGD, batch 1024, lr 0.1, momentum 0.9, weight decay 0, 50 epochs - and no
    L-BFGS. 2500 samples are 3 batches an epoch (1024, 1024, 452)."""
    made, batch_sizes = [], []
    real_sgd, real_objective = torch.optim.SGD, lp.objective

    def recording_sgd(params, **options):
        made.append(options)
        return real_sgd(params, **options)

    def recording_objective(model, x, y, l2):
        batch_sizes.append(len(x))
        return real_objective(model, x, y, l2)

    def no_lbfgs(*args, **kwargs):
        raise AssertionError("the default probe must not run L-BFGS")

    monkeypatch.setattr(torch.optim, "SGD", recording_sgd)
    monkeypatch.setattr(torch.optim, "LBFGS", no_lbfgs)
    monkeypatch.setattr(lp, "objective", recording_objective)
    train_x, train_y = separable_blobs(2500, seed=0)
    result = linear_probe(train_x, train_y, *separable_blobs(400, seed=1))
    assert result["solver"] == "sgd" and result["top1"] == 100.0
    assert made == [{"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}]
    assert batch_sizes == [1024, 1024, 452] * 50


def test_standardisation_in_chunks_equals_the_whole_at_once(monkeypatch):
    monkeypatch.setattr(lp, "STANDARDISE_CHUNK", 7)
    x = torch.randn(50, 3) * torch.tensor([1.0, 100.0, 0.0]) + 5
    mean, std = lp.standardisation(x)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(std, torch.tensor([x[:, 0].std(unbiased=False).item(),
                                                  x[:, 1].std(unbiased=False).item(), 1.0]))


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
    assert linear_probe(*args, seed=3, solver="lbfgs") == linear_probe(*args, seed=3, solver="lbfgs")
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
    with pytest.raises(ValueError, match="unknown SGD option.*'epoch'"):
        linear_probe(x, y, x, y, epoch=3)
    with pytest.raises(ValueError, match="L-BFGS probe takes no \\['epochs'\\]"):
        linear_probe(x, y, x, y, l2=1.0, solver="lbfgs", epochs=3)
    with pytest.raises(ValueError, match="one class index per sample"):
        linear_probe(x, y[:5], x, y, l2=1.0)
