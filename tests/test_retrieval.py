"""Retrieval metrics against a brute-force reference (full argsort), uneven captions, chunking."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm2clip.eval.cra import caption_retrieval_accuracy
from llm2clip.eval.retrieval import retrieval_metrics


def brute_force(images, texts, owner, ks):
    """Sort every score row; the rank is the position of the first correct item."""
    scores = (images @ texts.T).numpy()
    out = {}
    i2t_ranks = []
    for i in range(len(images)):
        own = np.flatnonzero(owner == i)
        if len(own) == 0:
            continue
        order = np.argsort(-scores[i], kind="stable")
        i2t_ranks.append(min(np.flatnonzero(np.isin(order, own))))
    t2i_ranks = [list(np.argsort(-scores[:, j], kind="stable")).index(owner[j]) for j in range(len(texts))]
    for name, ranks in (("i2t", np.array(i2t_ranks)), ("t2i", np.array(t2i_ranks))):
        for k in ks:
            out[f"{name}_R@{k}"] = 100.0 * np.mean(ranks < k)
        out[f"{name}_mean_rank"] = ranks.mean() + 1
    return out


def random_problem(n_images=40, seed=0, dim=16, noise=1.2):
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    counts = torch.randint(0, 5, (n_images,), generator=g)  # 0..4 captions; some images have none
    owner = np.repeat(np.arange(n_images), counts.numpy())
    texts = F.normalize(images[owner] + noise * torch.randn(len(owner), dim, generator=g), dim=-1)
    return images, texts, owner


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_uneven_captions_per_image(seed):
    images, texts, owner = random_problem(seed=seed)
    ks = (1, 5, 10)
    got = retrieval_metrics(images, texts, owner, ks=ks)
    want = brute_force(images, texts, owner, ks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < got["t2i_R@1"] < 100 and got["n_texts"] == len(owner)


@pytest.mark.parametrize("block", [1, 7, 64, 10**9])
def test_chunked_equals_unchunked(block):
    images, texts, owner = random_problem(n_images=60, seed=5)
    assert retrieval_metrics(images, texts, owner, block_elements=block) == retrieval_metrics(images, texts, owner)


def test_numpy_inputs_and_perfect_and_degenerate_models():
    eye = np.eye(8, dtype=np.float32)
    perfect = retrieval_metrics(eye, eye, np.arange(8))
    assert perfect["i2t_R@1"] == perfect["t2i_R@1"] == 100.0 and perfect["t2i_mean_rank"] == 1
    same = np.tile(eye[:1], (8, 1))  # every embedding identical: ties must not count as hits
    assert retrieval_metrics(same, same, np.arange(8))["t2i_R@1"] == 0.0


def test_bad_shapes_are_clear():
    with pytest.raises(ValueError, match="dimension 4 but text embeddings 5"):
        retrieval_metrics(torch.zeros(3, 4), torch.zeros(3, 5), [0, 1, 2])
    with pytest.raises(ValueError, match="2 entries for 3 texts"):
        retrieval_metrics(torch.zeros(3, 4), torch.zeros(3, 4), [0, 1])
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.zeros(3, 4), torch.zeros(1, 4), [3])


def test_non_finite_embeddings_are_refused_not_counted_as_hits():
    texts = torch.eye(4)
    texts[2, 0] = float("nan")  # compares False with everything: would rank first if allowed
    with pytest.raises(ValueError, match="1 text embeddings hold NaN/inf .first at row 2"):
        retrieval_metrics(torch.eye(4), texts, [0, 1, 2, 3])


def test_caption_retrieval_accuracy_is_t2i_on_paired_rows():
    images, texts, owner = random_problem(n_images=30, seed=9)
    g = torch.Generator().manual_seed(1)
    first = F.normalize(torch.randn(30, 16, generator=g), dim=-1)
    second = F.normalize(first + 0.9 * torch.randn(30, 16, generator=g), dim=-1)
    cra = caption_retrieval_accuracy(first, second)
    want = brute_force(second, first, np.arange(30), (1, 5))
    assert cra == {"top1": pytest.approx(want["t2i_R@1"]), "top5": pytest.approx(want["t2i_R@5"]), "n": 30}
