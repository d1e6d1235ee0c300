"""`llm2clip export-onnx` (issue 18 item 4): the image side and the adaptor as ONNX with a
dynamic batch, checked here with onnxruntime against PyTorch within 1e-4 on real images
(rendered emoji scenes, through the tower's own preprocessing) and real caption
embeddings, at batch sizes the export never traced; a search served from the ONNX files
ranks as the index does."""
import json

import numpy as np
import onnxruntime
import pytest
import torch

from llm2clip import LLM2CLIP
from llm2clip.cli import main as cli_main
from llm2clip.demo.rendering import render_scene
from llm2clip.demo.scenes import make_scenes
from llm2clip.export import ExportError, export_onnx
from llm2clip.export.onnx_export import TextSide, _check
from llm2clip.model import LLM2CLIPConfig
from llm2clip.search import Index, IndexKind, build_index
from llm2clip.text import CaptionEncoder

from test_search import QUERIES, models  # noqa: F401 - models: the module-scoped fixture


def run(path, inputs: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for scene in make_scenes(6, seed=7):
        render_scene(scene, size=96).save(folder / f"{scene.id}.png")
    return folder


@pytest.fixture(scope="module")
def exported(models, scenes, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("onnx") / "export"
    assert cli_main(["export-onnx", "--model", models["a"], "--out", str(out), "--check-images", str(scenes)]) == 0
    return out


def test_onnx_files_match_pytorch_on_real_images_and_caption_embeddings(models, scenes, exported):
    manifest = json.loads((exported / "export.json").read_text())
    assert manifest["check"]["image_inputs"] == "6 given image(s)"
    assert manifest["check"]["image_max_abs_diff"] < 1e-4 and manifest["check"]["text_max_abs_diff"] < 1e-4
    model = LLM2CLIP.from_pretrained(models["a"]).eval()
    from llm2clip.vision.image_loading import load_image

    images = [load_image(p) for p in sorted(scenes.iterdir())[:5]]
    pixels = model.vision.preprocess(images)
    with torch.no_grad():
        expected_images = model.encode_image(images).numpy()
        captions = model.caption_encoder.encode(QUERIES + ["a cat"]).float()
        expected_texts = model.encode_text(QUERIES + ["a cat"]).numpy()
    np.testing.assert_allclose(run(exported / "image_encoder.onnx", pixels), expected_images, atol=1e-4)  # batch 5
    np.testing.assert_allclose(run(exported / "text_adaptor.onnx", captions), expected_texts, atol=1e-4)  # batch 4


def test_a_search_served_from_the_onnx_files_ranks_as_the_index(models, scenes, exported, tmp_path):
    index = Index.open(build_index(models["a"], scenes, tmp_path / "idx", kind=IndexKind(dtype="fp32")))
    model = LLM2CLIP.from_pretrained(models["a"]).eval()
    with torch.no_grad():
        queries = run(exported / "text_adaptor.onnx", model.caption_encoder.encode(QUERIES).float())
    served = index.search_vectors(queries, k=6)
    for a, b in zip(served, index.search(QUERIES, k=6)):
        assert [h.key for h in a] == [h.key for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)


def test_the_check_refuses_a_file_that_does_not_compute_the_model(models, exported):
    model = LLM2CLIP.from_pretrained(models["a"], load_caption_encoder=False).eval()
    with torch.no_grad():
        next(model.adaptor.parameters()).mul_(1.5)  # PyTorch side no longer what the file holds
    rows = torch.nn.functional.normalize(torch.randn(3, model.config.text_dim), dim=-1)
    with pytest.raises(ExportError, match="differ by up to"):
        _check(TextSide(model).eval(), rows, exported / "text_adaptor.onnx", "caption_embeddings", 1e-4)


@pytest.mark.slow
def test_the_demo_tower_exports_within_1e4_on_real_images(tiny_llama, scenes, tmp_path):
    """The demo's ImageNet EfficientNet-Lite0 (through the project's loaders), embed_dim 256."""
    encoder = CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")
    torch.manual_seed(0)
    LLM2CLIP(LLM2CLIPConfig(vision="efficientnet-lite0", text_dim=encoder.dim, embed_dim=256),
             caption_encoder=encoder).save_pretrained(tmp_path / "model")
    images = sorted(scenes.iterdir())
    manifest = export_onnx(tmp_path / "model", tmp_path / "out", check_images=images)
    assert manifest["check"]["image_max_abs_diff"] < 1e-4
    assert json.loads((tmp_path / "out" / "preprocess.json").read_text())["size"] == 224
    model = LLM2CLIP.from_pretrained(tmp_path / "model", load_caption_encoder=False).eval()
    from llm2clip.vision.image_loading import load_image

    pixels = model.vision.preprocess([load_image(p) for p in images[:4]])
    with torch.no_grad():
        expected = model.encode_image(pixels).numpy()
    np.testing.assert_allclose(run(tmp_path / "out" / "image_encoder.onnx", pixels), expected, atol=1e-4)
