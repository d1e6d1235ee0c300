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


def test_each_bad_input_is_named_in_full():
    cases = [
        ((torch.zeros(3), torch.zeros(3, 4), [0, 1, 2]), "embeddings must be [N, D]; got images (3,), texts (3, 4)"),
        ((torch.zeros(3, 4), torch.zeros(3), [0, 1, 2]), "embeddings must be [N, D]; got images (3, 4), texts (3,)"),
        ((torch.zeros(3, 4), torch.zeros(0, 4), []), "retrieval needs at least one image and one text"),
        ((torch.zeros(0, 4), torch.zeros(1, 4), [0]), "retrieval needs at least one image and one text"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError) as err:
            retrieval_metrics(*args)
        assert str(err.value) == message
    images = torch.eye(4)
    images[1:3, 0] = float("inf")
    with pytest.raises(ValueError) as err:
        retrieval_metrics(images, torch.eye(4), [0, 1, 2, 3])
    assert str(err.value) == ("2 image embeddings hold NaN/inf (first at row 1); "
                              "the model produced non-finite outputs")


def test_any_integer_index_type_and_tensors_that_require_grad():
    images, texts, owner = random_problem(n_images=12, seed=3)
    want = retrieval_metrics(images, texts, owner)
    # int32 indices (as numpy or a loader may give them) are widened, not passed to scatter as is
    assert retrieval_metrics(images, texts, owner.astype(np.int32)) == want
    assert retrieval_metrics(images.requires_grad_(), texts.requires_grad_(), list(owner)) == want


def test_score_blocks_stay_within_block_elements(monkeypatch):
    from llm2clip.eval import retrieval

    shapes = []
    count = retrieval._count_at_least
    monkeypatch.setattr(retrieval, "_count_at_least", lambda scores, t: shapes.append(tuple(scores.shape)) or
                        count(scores, t))
    images, texts, owner = random_problem(n_images=10, seed=1)
    retrieval_metrics(images, texts, owner, block_elements=2 * len(texts))
    assert {s for s in shapes if s[1] == len(texts)} == {(2, len(texts))}  # I2T: two images per block
    assert max(rows for rows, cols in shapes if cols == 10) == 2 * len(texts) // 10  # T2I
    shapes.clear()
    retrieval_metrics(images, texts, owner, block_elements=5)  # smaller than a row: one query at a time
    assert {rows for rows, _ in shapes} == {1}
    shapes.clear()
    one = F.normalize(torch.randn(1, 16), dim=-1)  # one image: a T2I block of 4 texts holds 4 scores
    retrieval_metrics(one, torch.cat([one] * 8), [0] * 8, block_elements=4)
    assert (4, 1) in shapes and all(rows * cols <= 8 for rows, cols in shapes)


def test_hit_counts_stay_exact_past_float32s_integer_range():
    from llm2clip.eval.retrieval import _count_at_least

    n = 2 ** 24 + 1  # 16,777,217 is not a float32: a float32 sum of as many ones rounds it away
    assert _count_at_least(torch.ones(1, n), torch.zeros(1)).item() == n


def test_caption_retrieval_accuracy_is_t2i_on_paired_rows():
    images, texts, owner = random_problem(n_images=30, seed=9)
    g = torch.Generator().manual_seed(1)
    first = F.normalize(torch.randn(30, 16, generator=g), dim=-1)
    second = F.normalize(first + 0.9 * torch.randn(30, 16, generator=g), dim=-1)
    cra = caption_retrieval_accuracy(first, second)
    want = brute_force(second, first, np.arange(30), (1, 5))
    assert cra == {"top1": pytest.approx(want["t2i_R@1"]), "top5": pytest.approx(want["t2i_R@5"]), "n": 30}


# ---- R@1 with ties broken at random (eval/random_ties.py) ------------------------------------

def shuffled_r1(images, texts, owner, trials, seed=0):
    """Monte-Carlo reference: shuffle the candidates, rank with a stable sort (so ties keep
    the shuffled order), count R@1; averaged over `trials` shuffles."""
    rng = np.random.default_rng(seed)
    scores = (images @ texts.T).numpy()
    hits = {"i2t": [], "t2i": []}
    for _ in range(trials):
        text_order, image_order = rng.permutation(len(owner)), rng.permutation(len(images))
        for i in range(len(images)):
            if (owner == i).any():
                first = text_order[np.argsort(-scores[i, text_order], kind="stable")[0]]
                hits["i2t"].append(owner[first] == i)
        for j in range(len(owner)):
            first = image_order[np.argsort(-scores[image_order, j], kind="stable")[0]]
            hits["t2i"].append(first == owner[j])
    return {f"{d}_R@1_random_ties": 100.0 * np.mean(h) for d, h in hits.items()}


def near_duplicate_problem(seed=0, families=6, size=4, dim=12):
    """Families of images whose texts are exact copies of each other (a tower that cut
    them to the same tokens), plus some texts that are told apart."""
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(families * size, dim, generator=g), dim=-1)
    owner = np.arange(families * size)
    texts = F.normalize(images + 0.8 * torch.randn(len(images), dim, generator=g), dim=-1)
    for f in range(families - 2):  # the last two families keep distinct texts
        texts[f * size:(f + 1) * size] = F.normalize(images[f * size:(f + 1) * size].mean(0), dim=-1)
    return images, texts, owner


def test_random_ties_matches_a_shuffled_ranking():
    from llm2clip.eval.random_ties import random_tie_recall_at_1

    images, texts, owner = near_duplicate_problem()
    got = random_tie_recall_at_1(images, texts, owner)
    want = shuffled_r1(images, texts, owner, trials=400)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=3.0), key  # Monte-Carlo error ~1 point
    # the tie rule counts ties against the query: the random tie-break gives more I2T credit
    assert got["i2t_R@1_random_ties"] > retrieval_metrics(images, texts, owner)["i2t_R@1"] + 10


def test_random_ties_equal_r1_without_ties_and_are_chunk_invariant():
    from llm2clip.eval.random_ties import random_tie_recall_at_1

    images, texts, owner = random_problem(n_images=50, seed=3)
    got = random_tie_recall_at_1(images, texts, owner)
    plain = retrieval_metrics(images, texts, owner)
    assert got["t2i_R@1_random_ties"] == pytest.approx(plain["t2i_R@1"])
    assert got["i2t_R@1_random_ties"] == pytest.approx(plain["i2t_R@1"])
    tied = near_duplicate_problem(seed=1)
    assert random_tie_recall_at_1(*tied, block_elements=5) == random_tie_recall_at_1(*tied)
    same = np.tile(np.eye(8, dtype=np.float32)[:1], (8, 1))  # one point: each of 8 is first with chance 1/8
    assert random_tie_recall_at_1(same, same, np.arange(8)) == {"i2t_R@1_random_ties": 12.5,
                                                                 "t2i_R@1_random_ties": 12.5}
