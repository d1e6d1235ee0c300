"""Vision towers (tiny random CLIP/SigLIP) and robust image loading."""
import numpy as np
import pytest
import torch
from PIL import Image

from llm2clip.vision import load_vision_tower
from llm2clip.vision.image_loading import ImageError, load_image


@pytest.fixture(params=["clip", "siglip"])
def tower_dir(request, tiny_visions):
    return tiny_visions[request.param]


def images(n=3):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (20 + 7 * i, 40, 3), dtype=np.uint8)) for i in range(n)]


def test_preprocess_and_pooled_features(tower_dir):
    tower = load_vision_tower(tower_dir)
    pixels = tower.preprocess(images())
    assert pixels.shape == (3, 3, 32, 32)
    features = tower(pixels)
    assert features.shape == (3, tower.width) == (3, 32) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])


def test_save_load_round_trip_is_exact(tower_dir, tmp_path):
    tower = load_vision_tower(tower_dir).eval()
    tower.save_pretrained(tmp_path / "saved")
    again = load_vision_tower(tmp_path / "saved").eval()
    pixels = tower.preprocess(images())
    torch.testing.assert_close(again(again.preprocess(images())), tower(pixels), atol=0, rtol=0)


def test_layer_groups_cover_every_parameter_once_in_order(tower_dir):
    tower = load_vision_tower(tower_dir)
    groups = tower.layer_groups()
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) == len(list(tower.parameters()))
    assert len(groups) == 2 + 2  # embeddings, 2 layers, head
    vision = getattr(tower.model, "vision_model", tower.model)
    layer0 = {id(p) for p in vision.encoder.layers[0].parameters()}
    assert {id(p) for p in groups[1]} == layer0


def test_non_vision_models_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="not a supported vision tower"):
        load_vision_tower(tiny_llama)


def write(path, image, **kw):
    image.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "RGBA", "P", "I;16"])
def test_odd_image_modes_become_rgb(tmp_path, mode):
    base = Image.new("RGB", (16, 12), (200, 30, 30))
    if mode == "I;16":
        image = Image.fromarray(np.full((12, 16), 40000, dtype=np.uint16))
        path = write(tmp_path / "a.png", image)
    else:
        image = base.convert(mode)
        path = write(tmp_path / ("a.jpg" if mode in ("CMYK", "L") else "a.png"), image)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (16, 12)


def test_transparency_is_composited_on_white(tmp_path):
    path = write(tmp_path / "t.png", Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_broken_files_raise_image_error_naming_the_file(tmp_path):
    good = write(tmp_path / "good.jpg", Image.new("RGB", (64, 64), (1, 2, 3)))
    cases = {"missing.jpg": None, "empty.jpg": b"", "garbage.jpg": b"not an image at all",
             "truncated.jpg": good.read_bytes()[:200]}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ImageError, match=name):
            load_image(path)
    with pytest.raises(ImageError, match="exceeds the limit"):
        load_image(good, max_pixels=100)
