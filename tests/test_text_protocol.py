"""Every text encoder offers the same contract (text/protocol.py): `dim`, `max_tokens`,
`identity()`, and `encode` whose result carries the rows and how many inputs were cut;
every two-tower model exposes its text side the same way (`encode_text`, `max_text_tokens`)."""
import json

import pytest
import torch

from llm2clip.baseline import DualEncoder, HFClipBaseline, SentenceTextTower
from llm2clip.eval.models import encode_texts, text_limit
from llm2clip.model import LLM2CLIP, LLM2CLIPConfig
from llm2clip.text import CaptionEncoder, ConcatTextEncoder
from llm2clip.text.protocol import TextEmbeddings, TextEncoder

LONG = " ".join(["a small red apple next to a large blue cup on a wooden table"] * 12)  # ~160 tokens
TEXTS = [LONG, "a cat", LONG, "a dog on a mat"]  # two cut by every encoder below (limits 16 and 77)


def caption_encoder(tiny_llama):
    return CaptionEncoder.from_pretrained(tiny_llama, max_length=16, precision="fp32")


ENCODERS = {
    "caption": lambda f: caption_encoder(f["tiny_llama"]),
    "concat": lambda f: ConcatTextEncoder(caption_encoder(f["tiny_llama"]),
                                          HFClipBaseline.from_pretrained(f["tiny_clip"]), f["tiny_clip"]),
    "minilm": lambda f: SentenceTextTower(),
    "hf_clip": lambda f: HFClipBaseline.from_pretrained(f["tiny_clip"]),
    "dual": lambda f: DualEncoder(f["tiny_visions"]["clip"], embed_dim=16),
}


@pytest.fixture()
def fixtures(tiny_llama, tiny_clip, tiny_visions):
    return {"tiny_llama": tiny_llama, "tiny_clip": tiny_clip, "tiny_visions": tiny_visions}


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_every_text_encoder_reports_its_cuts_with_its_rows(kind, fixtures):
    encoder = ENCODERS[kind](fixtures).eval()
    assert isinstance(encoder, TextEncoder)
    assert json.loads(json.dumps(encoder.identity())) == encoder.identity()
    with torch.no_grad():
        encoded = encoder.encode(TEXTS, batch_size=3)
        alone = [encoder.encode([text], batch_size=1) for text in TEXTS]
    assert encoded.shape == (len(TEXTS), encoder.dim) and encoded.dtype == torch.float32
    assert encoded.truncated == 2 and [a.truncated for a in alone] == [1, 0, 1, 0]
    assert type(encoded.embeddings) is torch.Tensor and torch.equal(encoded.embeddings, encoded)
    torch.testing.assert_close(torch.cat([a.embeddings for a in alone]), encoded.embeddings, atol=1e-5, rtol=1e-5)
    assert encoder.encode(["a cat"]).truncated == 0  # a result counts its own call only


def test_two_tower_models_expose_the_text_side_the_same_way(tiny_llama, tiny_clip, tiny_visions):
    encoder = caption_encoder(tiny_llama)
    torch.manual_seed(0)
    llm2clip = LLM2CLIP(LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=encoder.dim, embed_dim=24,
                                       adaptor={"kind": "mlp", "num_blocks": 1, "expansion": 2}),
                        caption_encoder=encoder).eval()
    models = {"llm2clip": (llm2clip, 16), "hf_clip": (HFClipBaseline.from_pretrained(tiny_clip).eval(), 77),
              "dual": (DualEncoder(tiny_visions["clip"], embed_dim=16).eval(), 77)}
    for name, (model, limit) in models.items():
        with torch.no_grad():
            encoded = model.encode_text(TEXTS, batch_size=2)
            embeddings, truncated = encode_texts(model, TEXTS, batch_size=3)
        assert (encoded.truncated, truncated, text_limit(model)) == (2, 2, limit), name
        torch.testing.assert_close(embeddings, encoded.embeddings, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(TEXTS)))


def test_text_embeddings_behave_as_a_plain_tensor():
    rows = torch.randn(3, 4)
    encoded = TextEmbeddings.of(rows, 1)
    assert encoded.truncated == 1 and torch.equal(encoded, rows)
    for derived in (encoded[0], encoded + 1, torch.cat([encoded, encoded]), encoded.flip(0)):
        assert type(derived) is torch.Tensor  # the count belongs to the call's rows, not to what is made of them
    assert encoded.numpy().shape == (3, 4)
