"""Property tests (hypothesis) where an invariant is the contract:

- retrieval ranks and metrics equal a brute-force count, with ties and any number of
  captions per image (some images without any), whatever the chunk size;
- pooling a caption does not depend on the padding side or on the other captions of its
  batch;
- the embedding store gives back what was written, for every storage dtype, within the
  dtype's own rounding (derived here from the format, not read from the module);
- the batch plan gives every sample at most once per epoch, all of them but the dropped
  remainder, and the ranks' slices concatenate to the global batch.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm2clip.data.batch_plan import BatchPlan
from llm2clip.eval.retrieval import image_to_text_ranks, retrieval_metrics, text_to_image_ranks
from llm2clip.text.pooling import pool
from llm2clip.text_embeddings import TextEmbeddings

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ retrieval
@st.composite
def retrieval_cases(draw):
    """Small integer-valued embeddings (exact dot products, many ties) and an owner per text."""
    n_images = draw(st.integers(1, 7))
    n_texts = draw(st.integers(1, 12))
    dim = draw(st.integers(1, 3))
    values = st.integers(-1, 1)
    images = draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=n_images, max_size=n_images))
    texts = draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=n_texts, max_size=n_texts))
    owner = draw(st.lists(st.integers(0, n_images - 1), min_size=n_texts, max_size=n_texts))
    block = draw(st.integers(1, 40))  # scores per chunk: from one row at a time to all at once
    return (torch.tensor(images, dtype=torch.float32), torch.tensor(texts, dtype=torch.float32),
            torch.tensor(owner), block)


def brute_force_ranks(images, texts, owner):
    """Ties count against the query: rank = wrong items scoring at least the (best) correct one."""
    scores = (texts @ images.T).tolist()
    t2i = [sum(1 for i in range(len(images)) if i != owner[j] and scores[j][i] >= scores[j][owner[j]])
           for j in range(len(texts))]
    i2t = []
    for i in range(len(images)):
        own = [j for j in range(len(texts)) if owner[j] == i]
        if not own:
            continue  # an image without captions is left out of I2T
        best = max(scores[j][i] for j in own)
        i2t.append(sum(1 for j in range(len(texts)) if owner[j] != i and scores[j][i] >= best))
    return t2i, i2t


@FAST
@given(retrieval_cases())
def test_retrieval_ranks_equal_a_brute_force_count(case):
    images, texts, owner, block = case
    t2i, i2t = brute_force_ranks(images, texts, owner.tolist())
    assert text_to_image_ranks(images, texts, owner, block).tolist() == t2i
    assert image_to_text_ranks(images, texts, owner, block).tolist() == i2t
    metrics = retrieval_metrics(images, texts, owner.tolist(), ks=(1, 2), block_elements=block)
    for name, ranks in (("t2i", t2i), ("i2t", i2t)):
        for k in (1, 2):
            assert metrics[f"{name}_R@{k}"] == pytest.approx(100 * sum(r < k for r in ranks) / len(ranks))
        assert metrics[f"{name}_mean_rank"] == pytest.approx(np.mean(ranks) + 1)
        # torch's median of an even count is the lower middle value
        assert metrics[f"{name}_median_rank"] == sorted(ranks)[(len(ranks) - 1) // 2] + 1
    assert (metrics["n_images"], metrics["n_texts"]) == (len(images), len(texts))


# ------------------------------------------------------------------ pooling
@st.composite
def caption_batches(draw):
    """Captions as (instruction tokens, caption tokens, appended EOS): lengths only; the
    token states are random."""
    n = draw(st.integers(1, 4))
    shapes = [(draw(st.integers(0, 3)), draw(st.integers(1, 5))) for _ in range(n)]
    seed = draw(st.integers(0, 2 ** 16))
    return shapes, seed


def padded(states: list[torch.Tensor], pools: list[list[int]], side: str):
    width = max(len(s) for s in states)
    hidden = torch.full((len(states), width, states[0].shape[1]), 1e3)  # padding states: loud garbage
    attention = torch.zeros(len(states), width, dtype=torch.long)
    pool_mask = torch.zeros(len(states), width, dtype=torch.long)
    for row, (s, p) in enumerate(zip(states, pools)):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        hidden[row, cols], attention[row, cols], pool_mask[row, cols] = s, 1, torch.tensor(p)
    return hidden, pool_mask, attention


@FAST
@given(caption_batches(), st.sampled_from(["mean", "weighted_mean", "last"]))
def test_pooling_ignores_padding_side_and_the_rest_of_the_batch(case, how):
    shapes, seed = case
    generator = torch.Generator().manual_seed(seed)
    states = [torch.randn(k + c + 1, 4, generator=generator) for k, c in shapes]
    pools = [[0] * k + [1] * c + [0] for k, c in shapes]  # instruction and EOS are not pooled
    alone = [pool(*padded([s], [p], "right"), how)[0] for s, p in zip(states, pools)]
    for side in ("left", "right"):
        together = pool(*padded(states, pools, side), how)
        for row, expected in enumerate(alone):
            torch.testing.assert_close(together[row], expected, atol=1e-5, rtol=1e-5)
    # and the definitions themselves, on the unpadded caption alone
    for s, (k, c), got in zip(states, shapes, alone):
        caption = s[k:k + c]
        if how == "mean":
            expected = caption.mean(0)
        elif how == "weighted_mean":
            weights = torch.arange(1, c + 1, dtype=torch.float32)[:, None]
            expected = (caption * weights).sum(0) / weights.sum()
        else:
            expected = s[-1]  # the appended EOS
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ the embedding store
class TableEncoder(torch.nn.Module):
    """A caption encoder whose embedding of each caption is given: the store's round trip
    is then checked against known numbers."""

    def __init__(self, table: dict[str, np.ndarray]):
        super().__init__()
        self.table, self.num_truncated = table, 0
        self.dim = len(next(iter(table.values())))

    def encode(self, captions, batch_size: int = 32, show_progress: bool = False) -> TextEmbeddings:
        return TextEmbeddings.of(torch.from_numpy(np.stack([self.table[c] for c in captions])), truncated=0)

    def identity(self) -> dict:
        return {"encoder": "table", "dim": self.dim}

    def weights_fingerprint(self) -> str:
        return "table"


def rounding_bound(rows: np.ndarray, dtype: str) -> np.ndarray:
    """Largest |stored - written| the format allows, per element, from its definition:
    half an ulp of fp16 (10-bit mantissa, subnormal below 2**-14) or bf16 (7-bit mantissa),
    both rounded to nearest; half a quantisation step max|row|/127 for int8 (plus float32
    rounding of the division and product)."""
    magnitude = np.abs(rows)
    if dtype == "fp32":
        return np.zeros_like(rows)
    if dtype == "fp16":
        return np.maximum(magnitude * 2.0 ** -11, 2.0 ** -25)
    if dtype == "bf16":
        return np.maximum(magnitude * 2.0 ** -8, 1e-38)
    row_max = magnitude.max(axis=1, keepdims=True)
    return np.repeat(row_max / 127 / 2 + row_max * 1e-6, rows.shape[1], axis=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(n=st.integers(1, 9), dim=st.integers(1, 6), shard_size=st.integers(1, 4), seed=st.integers(0, 2 ** 16),
       scale=st.sampled_from([1e-3, 1.0, 30.0]), dtype=st.sampled_from(["fp32", "fp16", "bf16", "int8"]))
def test_the_store_gives_back_what_was_written_for_every_dtype(tmp_path_factory, n, dim, shard_size, seed, scale,
                                                               dtype):
    from llm2clip.data.records import CaptionRecord
    from llm2clip.embeddings import EmbeddingStore, write_embedding_store

    rng = np.random.default_rng(seed)
    rows = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    if n > 1:
        rows[1] = 0.0  # an all-zero row (int8's scale must not divide by zero)
    records = [CaptionRecord(id=f"s{i}", captions=[f"caption {i}"], sources=["text"]) for i in range(n)]
    encoder = TableEncoder({f"caption {i}": rows[i] for i in range(n)})
    out = write_embedding_store(encoder, records, tmp_path_factory.mktemp("store") / "s", dtype=dtype,
                                shard_size=shard_size)
    store = EmbeddingStore.open(out)
    order = rng.permutation(n)
    got = store.get_many([f"s{i}" for i in order], "text")
    assert got.dtype == np.float32 and got.shape == (n, dim) and len(store) == n
    assert (np.abs(got - rows[order]) <= rounding_bound(rows[order], dtype)).all(), dtype
    assert store.text_matches("s0", "text", "caption 0") and not store.text_matches("s0", "text", "caption 1")


# ------------------------------------------------------------------ the batch plan
@FAST
@given(n=st.integers(1, 60), per_rank=st.integers(1, 8), world=st.integers(1, 4), seed=st.integers(0, 2 ** 31),
       epochs=st.integers(1, 3))
def test_every_sample_at_most_once_per_epoch_across_ranks(n, per_rank, world, seed, epochs):
    global_batch = per_rank * world
    if n < global_batch:
        with pytest.raises(ValueError, match="cannot fill"):
            BatchPlan(n, global_batch, seed)
        return
    plan = BatchPlan(n, global_batch, seed)
    assert plan.steps_per_epoch == n // global_batch
    seen_by_epoch = []
    for epoch in range(epochs):
        seen = []
        for step in range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch):
            slices = [plan.local_indices(step, r, world) for r in range(world)]
            assert all(len(s) == per_rank for s in slices)
            assert sum(slices, []) == plan.global_indices(step)  # rank order = the global batch
            seen += sum(slices, [])
        assert len(seen) == len(set(seen)) == plan.steps_per_epoch * global_batch  # each at most once
        assert set(seen) <= set(range(n))
        seen_by_epoch.append(seen)
    if n % global_batch == 0:  # nothing dropped: every sample exactly once
        assert all(sorted(s) == list(range(n)) for s in seen_by_epoch)
    assert BatchPlan(n, global_batch, seed).global_indices(0) == plan.global_indices(0)  # a function of (seed, step)
