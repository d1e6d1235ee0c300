"""eval/stored_captions.py: an LLM2CLIP evaluated with caption embeddings from its store
gives what running the caption encoder gives, and refuses captions the store does not hold."""
import pytest
import torch

from llm2clip.data.records import CaptionRecord
from llm2clip.embeddings import write_embedding_store
from llm2clip.embeddings.store import StoreMismatchError
from llm2clip.eval.stored_captions import StoredCaptionModel


class Head:
    """A stand-in for LLM2CLIP's text side: a fixed linear map of the caption embedding."""

    def __init__(self, dim):
        self.weight = torch.randn(dim, 8, generator=torch.Generator().manual_seed(0))

    def encode_text_embeddings(self, embeddings):
        return embeddings.float() @ self.weight

    def encode_image(self, images):
        return torch.zeros(len(images), 8)


def test_stored_captions_equal_the_encoder_and_refuse_unknown_or_edited_text(tiny_llama, tmp_path):
    from llm2clip.text import CaptionEncoder

    encoder = CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0}).eval()
    records = [CaptionRecord(f"s{i}", [f"a photo of thing {i}", f"thing {i} on a table, seen from above"],
                             sources=["short", "long"]) for i in range(6)]
    records.append(CaptionRecord("s6", ["a photo of thing 0"], sources=["short"]))  # a repeated text
    write_embedding_store(encoder, records, tmp_path / "store", dtype="fp32", shard_size=4, batch_size=3)
    head = Head(encoder.dim)
    model = StoredCaptionModel(head, tmp_path / "store", records)
    texts = ["thing 3 on a table, seen from above", "a photo of thing 5", "a photo of thing 0", "a photo of thing 1"]
    with torch.no_grad():
        want = head.encode_text_embeddings(encoder.encode(texts, batch_size=2))
    assert torch.allclose(model.encode_text(texts), want, atol=1e-5)
    with pytest.raises(KeyError, match="not in the store"):
        model.encode_text(["a caption nobody embedded"])
    edited = records[:2] + [CaptionRecord("s2", ["a photo of thing 2 (edited)", records[2].captions[1]],
                                          sources=["short", "long"])]
    with pytest.raises(StoreMismatchError, match="s2"):
        StoredCaptionModel(head, tmp_path / "store", edited)
