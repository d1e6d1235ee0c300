"""LLM2CLIP model: encode both sides, exact save/load round trip, tower export."""
import pytest
import torch
from PIL import Image

from llm2clip.model import LLM2CLIP, LLM2CLIPConfig
from llm2clip.text import CaptionEncoder
from llm2clip.vision import load_vision_tower


@pytest.fixture()
def model(tiny_visions, tiny_llama):
    encoder = CaptionEncoder.from_pretrained(tiny_llama, lora=True)
    config = LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=encoder.dim, embed_dim=24,
                            adaptor={"kind": "mlp", "num_blocks": 2, "expansion": 2})
    torch.manual_seed(0)
    return LLM2CLIP(config, caption_encoder=encoder).eval()


IMAGES = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
TEXTS = ["a red picture", "a green one", "blue"]


def test_encoders_give_normalised_embeddings_of_embed_dim(model):
    image, text = model.encode_image(IMAGES), model.encode_text(TEXTS)
    assert image.shape == text.shape == (3, 24)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    # another way: each caption encoded alone, through the adaptor, normalised here
    with torch.no_grad():
        alone = torch.cat([model.caption_encoder.encode([t]) for t in TEXTS])
        expected = torch.nn.functional.normalize(model.adaptor(alone), dim=-1)
    torch.testing.assert_close(text, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode_image(model.vision.preprocess(IMAGES)), image)
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_save_load_round_trip_is_exact_and_the_tower_exports_as_plain_hf(model, tmp_path):
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
        for p in model.adaptor.parameters():
            p.add_(0.01)
    model.save_pretrained(tmp_path / "m")
    again = LLM2CLIP.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(again.encode_image(IMAGES), model.encode_image(IMAGES), atol=0, rtol=0)
    torch.testing.assert_close(again.encode_text(TEXTS), model.encode_text(TEXTS), atol=0, rtol=0)
    assert again.logit_scale.item() == 3.0

    model.export_vision_tower(tmp_path / "tower")
    from transformers import CLIPVisionModel

    plain = CLIPVisionModel.from_pretrained(tmp_path / "tower").eval()
    pixels = model.vision.preprocess(IMAGES)
    torch.testing.assert_close(plain(pixel_values=pixels).pooler_output, model.vision(pixels), atol=0, rtol=0)


def test_dimension_mismatch_and_missing_folder_are_clear(model, tmp_path):
    with pytest.raises(ValueError, match="dimension 7, this model expects 32"):
        model.encode_text_embeddings(torch.zeros(2, 7))
    with pytest.raises(FileNotFoundError, match="not an LLM2CLIP folder"):
        LLM2CLIP.from_pretrained(tmp_path)
    assert load_vision_tower(model.config.vision).width == 32
