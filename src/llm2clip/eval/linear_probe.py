"""Linear probe: multinomial logistic regression on frozen image features, in torch.

Default, the paper's protocol (§4.2.3, Table 4): SGD with batch size 1024, learning rate
0.1 (constant: the paper names no schedule), momentum 0.9, weight decay 0, 50 epochs.
The features are standardised with the training mean and std (the paper does not say;
CLIP's protocol does, and it makes lr 0.1 meaningful whatever the features' scale). The
fit is mini-batched and standardises each batch on the fly, so ImageNet-size features
(1.28M x 1280) are held once, never copied whole.

Option (`solver="lbfgs"`): CLIP's protocol - full-batch L-BFGS on

    mean cross-entropy over the training set + l2 / 2 * ||W||^2     (the bias is free)

(sklearn's objective divided by C*n, i.e. l2 = 1 / (C * n_train)) with the penalty chosen
on a held-out split of the training set (a sweep over sklearn's C = 1e-6 .. 1e6). Exact,
but it holds the standardised features and their [N, classes] logits at once: for
feature sets that fit in memory. Both solvers minimise the same objective (SGD with the
paper's l2 = 0) and are deterministic given `seed`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .zeroshot import correct_class_ranks, topk_accuracy

log = logging.getLogger("llm2clip.linear_probe")

# l2 = 1/(C n): for n between 1e3 and 1e6 this spans CLIP's C sweep where it matters.
DEFAULT_L2_CANDIDATES = tuple(10.0 ** k for k in range(-6, 3))
SOLVERS = ("sgd", "lbfgs")  # the first is the default
# §4.2.3: "batch size of 1024, learning rate of 0.1, momentum 0.9, weight decay 0 and total 50 epochs using SGD"
PAPER_SGD = {"batch_size": 1024, "lr": 0.1, "momentum": 0.9, "epochs": 50}
STANDARDISE_CHUNK = 65536  # rows per pass when computing the training mean/std


@dataclass
class LinearClassifier:
    """Standardisation and the fitted affine map: logits = ((x - mean) / std) @ weight + bias."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor  # [D, C]
    bias: torch.Tensor  # [C]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std) @ self.weight + self.bias


def linear_probe(train_x, train_y, test_x, test_y, *, solver: str = "sgd", l2: float | None = None,
                 max_iter: int = 1000, candidates: tuple[float, ...] = DEFAULT_L2_CANDIDATES,
                 val_fraction: float = 0.2, seed: int = 0, ks: tuple[int, ...] = (1, 5),
                 **solver_options) -> dict[str, float]:
    """Fit on (train_x, train_y), report top-k accuracy (percent) on (test_x, test_y).

    `solver="sgd"` (the paper's, default): `l2=None` means the paper's weight decay 0;
    `solver_options` override PAPER_SGD (`epochs`, `batch_size`, `lr`, `momentum`).
    `solver="lbfgs"`: `l2=None` picks the penalty with `select_l2` on a held-out part of
    the training set, then refits on the whole training set.
    """
    _check_solver(solver)
    train_x, test_x = _features(train_x), _features(test_x)
    train_y, test_y = _labels(train_y, train_x), _labels(test_y, test_x)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train features have dimension {train_x.shape[1]} but test features {test_x.shape[1]}")
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    if l2 is None and solver == "sgd":
        l2 = 0.0
    elif l2 is None:
        l2 = select_l2(train_x, train_y, candidates=candidates, val_fraction=val_fraction, seed=seed,
                       solver=solver, max_iter=max_iter, n_classes=n_classes, **solver_options)
    model = fit_logistic_regression(train_x, train_y, l2=l2, n_classes=n_classes, solver=solver,
                                    max_iter=max_iter, seed=seed, **solver_options)
    ranks = correct_class_ranks(lambda rows: model.logits(test_x[rows]), test_y, n_classes)
    return {**topk_accuracy(ranks, ks), "n_train": len(train_x), "n_test": len(test_x), "l2": float(l2),
            "solver": solver}


def select_l2(train_x, train_y, candidates: tuple[float, ...] = DEFAULT_L2_CANDIDATES, val_fraction: float = 0.2,
              seed: int = 0, criterion: str = "accuracy", **fit_options) -> float:
    """The penalty that does best on a stratified held-out split of the training set.

    `criterion="accuracy"`: highest validation top-1, ties broken by the lower validation
    cross-entropy (then the larger penalty). `criterion="loss"`: lowest validation
    cross-entropy — a proper scoring rule, smooth in l2, so it is the steadier choice on
    small validation sets.
    """
    sweep = l2_sweep(train_x, train_y, candidates, val_fraction, seed, **fit_options)
    if criterion == "accuracy":
        best = min(sweep, key=lambda row: (-row["accuracy"], row["loss"], -row["l2"]))
    elif criterion == "loss":
        best = min(sweep, key=lambda row: (row["loss"], -row["l2"]))
    else:
        raise ValueError(f"criterion must be 'accuracy' or 'loss', not {criterion!r}")
    log.info("linear probe l2 sweep: %s -> l2=%g",
             ", ".join(f"{r['l2']:g}: {r['accuracy']:.1f}% / {r['loss']:.3f}" for r in sweep), best["l2"])
    return best["l2"]


def l2_sweep(train_x, train_y, candidates: tuple[float, ...] = DEFAULT_L2_CANDIDATES, val_fraction: float = 0.2,
             seed: int = 0, n_classes: int | None = None, solver: str = "lbfgs",
             **fit_options) -> list[dict[str, float]]:
    """Validation accuracy (percent) and mean cross-entropy for every candidate penalty
    (fitted with L-BFGS, CLIP's protocol, unless told otherwise)."""
    x = _features(train_x)
    y = _labels(train_y, x)
    n_classes = n_classes or int(y.max()) + 1
    fit_idx, val_idx = stratified_split(y, val_fraction, seed)
    if len(val_idx) == 0 or len(fit_idx) == 0:
        raise ValueError(f"cannot hold out {val_fraction:.0%} of {len(y)} training samples for choosing l2")
    rows = []
    for l2 in sorted(candidates):
        model = fit_logistic_regression(x[fit_idx], y[fit_idx], l2=l2, n_classes=n_classes, seed=seed,
                                        solver=solver, **fit_options)
        with torch.no_grad():
            logits = model.logits(x[val_idx])
        rows.append({"l2": float(l2), "accuracy": 100.0 * (logits.argmax(1) == y[val_idx]).double().mean().item(),
                     "loss": F.cross_entropy(logits, y[val_idx]).item()})
    return rows


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, validation indices): `val_fraction` of every class, at random, and a
    class with a single sample stays in the fit part."""
    generator = torch.Generator().manual_seed(seed)
    fit, val = [], []
    for c in torch.unique(labels):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = min(int(round(val_fraction * len(members))), len(members) - 1)
        val.append(members[:n_val])
        fit.append(members[n_val:])
    return torch.cat(fit).sort().values, torch.cat(val).sort().values


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, *, l2: float, n_classes: int | None = None,
                            solver: str = "sgd", max_iter: int = 1000, seed: int = 0,
                            **solver_options) -> LinearClassifier:
    """Minimise mean cross-entropy + l2/2 ||W||^2 on standardised features."""
    _check_solver(solver)
    n_classes = n_classes or int(y.max()) + 1
    mean, std = standardisation(x)
    weight = torch.zeros(x.shape[1], n_classes, requires_grad=True)  # zeros: the start is deterministic
    bias = torch.zeros(n_classes, requires_grad=True)
    model = LinearClassifier(mean, std, weight, bias)
    if solver == "lbfgs":
        if solver_options:
            raise ValueError(f"the L-BFGS probe takes no {sorted(solver_options)} (SGD options)")
        _fit_lbfgs(model, (x - mean) / std, y, l2, max_iter)
    else:
        _fit_sgd(model, x, y, l2, seed=seed, **solver_options)
    return LinearClassifier(mean, std, weight.detach(), bias.detach())


def objective(model: LinearClassifier, x_standardised: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """The penalised loss both solvers minimise (on already-standardised features)."""
    logits = x_standardised @ model.weight + model.bias
    return F.cross_entropy(logits, y) + 0.5 * l2 * model.weight.pow(2).sum()


def standardisation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training mean and std per feature, in float64 over chunks of rows (no second copy of
    x); a constant feature gets std 1 (left as zero)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), STANDARDISE_CHUNK):
        total += x[start:start + STANDARDISE_CHUNK].double().sum(0)
    mean = total / len(x)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), STANDARDISE_CHUNK):
        squares += (x[start:start + STANDARDISE_CHUNK].double() - mean).pow(2).sum(0)
    std = (squares / len(x)).sqrt()
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.to(x.dtype), std.to(x.dtype)


def _fit_lbfgs(model: LinearClassifier, x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> None:
    optimizer = torch.optim.LBFGS([model.weight, model.bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = objective(model, x, y, l2)
        loss.backward()
        return loss

    optimizer.step(closure)  # one step runs up to max_iter L-BFGS iterations


def _fit_sgd(model: LinearClassifier, x: torch.Tensor, y: torch.Tensor, l2: float, *, seed: int = 0,
             **options) -> None:
    """The paper's SGD (PAPER_SGD, overridable): a fresh shuffle each epoch, each batch
    gathered and standardised on its own. With l2 > 0 the penalty is in the loss (the
    objective L-BFGS minimises), which for SGD is plain coupled weight decay."""
    unknown = sorted(set(options) - set(PAPER_SGD))
    if unknown:
        raise ValueError(f"unknown SGD option(s) {unknown}; valid: {sorted(PAPER_SGD)}")
    o = {**PAPER_SGD, **options}
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD([model.weight, model.bias], lr=o["lr"], momentum=o["momentum"], weight_decay=0.0)
    for _ in range(o["epochs"]):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), o["batch_size"]):
            rows = order[start:start + o["batch_size"]]
            optimizer.zero_grad()
            objective(model, (x[rows] - model.mean) / model.std, y[rows], l2).backward()
            optimizer.step()


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, not {solver!r}")


def _features(x) -> torch.Tensor:
    t = x.detach() if torch.is_tensor(x) else torch.from_numpy(np.asarray(x))
    t = t.float().cpu()
    if t.ndim != 2 or len(t) == 0:
        raise ValueError(f"features must be a non-empty [N, D] array; got shape {tuple(t.shape)}")
    return t


def _labels(y, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y.cpu() if torch.is_tensor(y) else y), dtype=torch.long)
    if t.ndim != 1 or len(t) != len(x):
        raise ValueError(f"labels must be one class index per sample: {tuple(t.shape)} for {len(x)} samples")
    if t.min() < 0:
        raise ValueError(f"labels must be non-negative class indices; got {t.min().item()}")
    return t
