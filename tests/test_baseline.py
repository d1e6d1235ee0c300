"""The baseline models: the MiniLM text tower (77 tokens), the demo's DualEncoder and an
HF CLIP model's own text tower, each checked against an independent computation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from llm2clip.baseline import DualEncoder, HFClipBaseline, SentenceTextTower, train_dual_encoder
from llm2clip.baseline.text_tower import embedded_minilm_path
from llm2clip.eval.retrieval import retrieval_metrics

LONG = " ".join(["a small red apple next to a large blue cup on a wooden table"] * 12)  # ~160 tokens
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20),
           "black": (0, 0, 0), "white": (255, 255, 255), "purple": (140, 30, 160), "orange": (250, 140, 0)}


@pytest.fixture(scope="module")
def minilm():
    return SentenceTextTower().eval()


def test_text_tower_is_mean_pooled_minilm_and_batch_invariant(minilm):
    from transformers import AutoModel, AutoTokenizer

    path = embedded_minilm_path()
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    texts = ["a dog", "a photo of a cat sitting on a red sofa in the sun"]
    with torch.no_grad():
        batched = minilm(texts)
        for row, text in zip(batched, texts):  # one at a time: no padding at all
            reference = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(0)
            torch.testing.assert_close(row, reference, atol=1e-5, rtol=1e-5)


def test_text_tower_cuts_at_77_tokens_and_counts_the_cut(minilm):
    tokenizer = minilm.tokenizer
    ids = tokenizer(LONG)["input_ids"]
    assert len(ids) > 77
    first_77 = ids[:76] + [tokenizer.sep_token_id]  # what truncation keeps: 76 tokens + [SEP]
    with torch.no_grad():
        cut = minilm([LONG, "short"])
        reference = minilm.model(input_ids=torch.tensor([first_77])).last_hidden_state[0].mean(0)
    torch.testing.assert_close(cut[0], reference, atol=1e-5, rtol=1e-5)
    assert minilm.encode([LONG, "short"]).truncated == 1


def test_text_tower_is_a_real_sentence_encoder(minilm):
    with torch.no_grad():
        a, b, c = F.normalize(minilm(["a photo of a dog", "a picture of a puppy", "a red sports car"]), dim=-1)
    assert a @ b > a @ c + 0.2


def colour_images(n_per_colour=3):
    rng = np.random.default_rng(0)
    images, captions = [], []
    for name, rgb in COLOURS.items():
        for _ in range(n_per_colour):
            pixels = np.clip(np.array(rgb) + rng.integers(-20, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(pixels))
            captions.append([f"a {name} square", f"a picture filled with the colour {name}"])
    return images, captions


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    images, captions = colour_images()
    paths = []
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths, captions


@pytest.mark.slow
def test_dual_encoder_learns_to_align_and_round_trips(tiny_visions, colour_set, tmp_path):
    paths, captions = colour_set
    torch.manual_seed(0)
    model = DualEncoder(tiny_visions["clip"], embed_dim=32)
    images = [Image.open(p) for p in paths]
    texts = [c[0] for c in captions]
    owner = list(range(len(texts)))
    with torch.no_grad():
        before = retrieval_metrics(model.encode_image(images), model.encode_text(texts), owner)
    summary = train_dual_encoder(model, paths, captions, steps=150, batch_size=16, lr=1e-2, seed=0)
    assert summary["last_loss"] < summary["first_loss"]
    with torch.no_grad():
        after = retrieval_metrics(model.encode_image(images), model.encode_text(texts), owner)
    # 8 colours x 3 near-identical images: R@5 of the right colour's 3 images is the reachable truth
    assert after["t2i_R@5"] > before["t2i_R@5"] and after["t2i_R@5"] >= 90.0
    model.save_pretrained(tmp_path / "dual")
    loaded = DualEncoder.from_pretrained(tmp_path / "dual").eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(texts), model.encode_text(texts))
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
    assert loaded.max_text_tokens == 77 and loaded.info == {}


def test_dual_encoder_counts_truncated_captions_and_trains_only_heads(tiny_visions):
    model = DualEncoder(tiny_visions["clip"], embed_dim=16)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "image_projection.weight", "text_projection.weight", "logit_scale"}
    with torch.no_grad():
        assert model.encode_text([LONG, "short", LONG], batch_size=2).truncated == 2


def test_dual_encoder_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a DualEncoder folder"):
        DualEncoder.from_pretrained(tmp_path)


def test_hf_clip_baseline_uses_the_models_own_towers_truncated_at_77(tiny_clip):
    baseline = HFClipBaseline.from_pretrained(tiny_clip).eval()
    assert baseline.max_text_tokens == 77
    tokenizer, model = baseline.tokenizer, baseline.model
    texts = ["a dog", LONG, "a cat on a mat"]
    embedded = baseline.encode_text(texts, batch_size=2)
    assert embedded.shape == (3, 24) and embedded.truncated == 1
    with torch.no_grad():
        for row, text in zip(embedded, texts):  # one at a time, cut by hand: no padding involved
            ids = tokenizer(text)["input_ids"]
            ids = ids if len(ids) <= 77 else ids[:76] + [tokenizer.sep_token_id]
            reference = model.get_text_features(input_ids=torch.tensor([ids])).pooler_output[0]
            torch.testing.assert_close(row, F.normalize(reference, dim=-1), atol=1e-5, rtol=1e-5)
    images = colour_images(1)[0][:4]
    features = baseline.encode_image(images)
    assert features.shape == (4, 24)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(4))


def test_hf_clip_baseline_refuses_a_vision_only_model(tiny_visions):
    with pytest.raises(ValueError, match="not a CLIP or SigLIP model"):
        HFClipBaseline.from_pretrained(tiny_visions["clip"])
