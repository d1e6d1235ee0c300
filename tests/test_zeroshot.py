"""Zero-shot classification against independent truths: a separable synthetic task, a
brute-force argsort reference (with ties), and a hand-computed prompt ensemble."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm2clip.eval.zeroshot import class_text_embeddings, zeroshot_metrics

CLASS_NAMES = ["cat", "dog", "bird", "fish", "horse", "sheep", "truck"]
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "{} in the wild"]


def prototype_encoder(prototypes: torch.Tensor, names: list[str]):
    """encode_text that returns v_c for any prompt naming class c (and counts its calls)."""
    calls = []

    def encode(texts):
        calls.append(len(texts))
        return torch.stack([prototypes[names.index(_named_class(t, names))] for t in texts])

    return encode, calls


def _named_class(prompt: str, names: list[str]) -> str:
    (name,) = [word for word in prompt.replace(".", "").split() if word in names]
    return name


def test_separable_synthetic_task_is_solved():
    g = torch.Generator().manual_seed(0)
    prototypes = F.normalize(torch.randn(len(CLASS_NAMES), 32, generator=g), dim=-1)
    labels = torch.randint(0, len(CLASS_NAMES), (300,), generator=g)
    images = F.normalize(prototypes[labels] + 0.05 * torch.randn(300, 32, generator=g), dim=-1)
    encode, calls = prototype_encoder(prototypes, CLASS_NAMES)
    classes = class_text_embeddings(encode, CLASS_NAMES, TEMPLATES, batch_size=4)
    assert torch.allclose(classes, prototypes, atol=1e-6)
    assert max(calls) <= 4 and sum(calls) == len(CLASS_NAMES) * len(TEMPLATES)  # batched
    metrics = zeroshot_metrics(images, classes, labels)
    assert metrics == {"top1": 100.0, "top5": 100.0, "n": 300}


def brute_force(images, classes, labels, ks):
    """Stable argsort of each score row with the true class placed after every tie."""
    scores = (images @ classes.T).numpy()
    ranks = []
    for i, label in enumerate(labels):
        # Sort by (-score, is_true_class): a wrong class with an equal score comes first.
        order = np.lexsort((np.arange(len(classes)) == label, -scores[i]))
        ranks.append(int(np.flatnonzero(order == label)[0]))
    ranks = np.array(ranks)
    return {f"top{k}": 100.0 * np.mean(ranks < k) for k in ks}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("block", [1, 13, 10**9])
def test_matches_brute_force_with_ties_and_any_chunking(seed, block):
    g = torch.Generator().manual_seed(seed)
    # Coarsely quantised embeddings: many exact score ties between classes.
    images = torch.randint(-1, 2, (97, 6), generator=g).float()
    classes = torch.randint(-1, 2, (11, 6), generator=g).float()
    labels = torch.randint(0, 11, (97,), generator=g)
    ks = (1, 3, 5)
    got = zeroshot_metrics(images, classes, labels, ks=ks, block_elements=block)
    want = brute_force(images, classes, labels, ks)
    assert {k: got[k] for k in want} == pytest.approx(want, abs=1e-9)
    assert got["n"] == 97 and 0 < got["top1"] < got["top5"] < 100


def test_collapsed_model_scores_zero_not_hundred():
    images = torch.ones(20, 4) / 2
    classes = torch.ones(10, 4) / 2  # every score equal
    assert zeroshot_metrics(images, classes, torch.arange(20) % 10) == {"top1": 0.0, "top5": 0.0, "n": 20}


def test_nan_scores_are_misses():
    images = torch.eye(4)
    images[0] = float("nan")
    assert zeroshot_metrics(images, torch.eye(4), torch.arange(4))["top1"] == 75.0


def test_prompt_ensemble_equals_hand_computed_mean():
    vectors = {"a cat": torch.tensor([3.0, 0.0, 0.0]), "the cat": torch.tensor([0.0, 2.0, 0.0]),
               "a dog": torch.tensor([0.0, 0.0, 1.0]), "the dog": torch.tensor([0.0, 0.0, 5.0])}
    classes = class_text_embeddings(lambda texts: torch.stack([vectors[t] for t in texts]), ["cat", "dog"],
                                    ["a {}", lambda name: f"the {name}"])
    # cat: mean of e1 and e2 (each normalised first, so the 3 and 2 do not weigh) = (1,1,0)/sqrt2
    assert torch.allclose(classes, torch.tensor([[2 ** -0.5, 2 ** -0.5, 0.0], [0.0, 0.0, 1.0]]))


def test_numpy_inputs_and_errors():
    eye = np.eye(5, dtype=np.float32)
    assert zeroshot_metrics(eye, eye, np.arange(5), ks=(1,))["top1"] == 100.0
    with pytest.raises(ValueError, match="dimension 5 but class embeddings 4"):
        zeroshot_metrics(eye, eye[:, :4], np.arange(5))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        zeroshot_metrics(eye, eye[:3], np.arange(5))
    with pytest.raises(ValueError, match="one class index per image"):
        zeroshot_metrics(eye, eye, np.arange(4))
    with pytest.raises(ValueError, match="4 prompts"):
        class_text_embeddings(lambda texts: torch.ones(1, 3), ["a", "b"], ["{}", "x {}"])
