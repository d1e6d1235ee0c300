"""`llm2clip export-onnx`: a trained model's two serving halves as ONNX, checked by onnxruntime.

  image_encoder.onnx  pixel_values [batch, 3, H, W] float32 -> image_embeds [batch, D]:
                      the tuned tower + projection, L2-normalised (`encode_image` on pixels)
  text_adaptor.onnx   caption_embeddings [batch, text_dim] float32 -> text_embeds [batch, D]:
                      the adaptor (and a method-(d) model's heads), L2-normalised
                      (`encode_text_embeddings`): a stored caption embedding, or the caption
                      encoder's output for a new query, into the joint space
  preprocess.json     how pixels are made from an image (the tower's own transform)
  export.json         the model's identity, the files, their input/output names, and the
                      largest difference onnxruntime showed against PyTorch
Both have a dynamic batch dimension. Before anything is written as final, onnxruntime runs
each file at batch sizes 1 and 3 (the export traced 2) on the check inputs, and the export
fails if any output differs from PyTorch's by more than `tolerance` (1e-4).
The caption encoder itself (the LLM) is not exported: it stays a transformers model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..atomic_file import atomic_folder, atomic_write_text

IMAGE_FILE, TEXT_FILE, PREPROCESS_FILE, MANIFEST = ("image_encoder.onnx", "text_adaptor.onnx", "preprocess.json",
                                                    "export.json")
OPSET = 18
CHECK_CAPTIONS = ("A red bicycle leans against a brick wall under a window with green shutters.",
                  "Ein Hund schläft auf einem blauen Sofa neben einer Lampe.",
                  "两只猫坐在窗台上看着外面的雨。")
_INSTALL = "ONNX export needs the `onnx` extra: pip install 'llm2clip[onnx]' (onnx, onnxscript, onnxruntime)"


class ExportError(ValueError):
    """An export whose ONNX outputs do not match PyTorch's."""


class ImageSide(nn.Module):
    """Pixels -> the model's image embedding (tower, projection, L2 norm)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.project_image_features(self.model.vision(pixel_values))


class TextSide(nn.Module):
    """Caption-encoder embeddings -> the model's text embedding (adaptor, L2 norm)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, caption_embeddings: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text_embeddings(caption_embeddings)


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                check_images: Sequence | None = None, tolerance: float = 1e-4) -> dict[str, Any]:
    """Export and check; returns export.json's content. `check_images` (PIL images or paths)
    are the real images the image side is checked on (default: 3 random pixel batches);
    the text side is checked on the caption encoder's embeddings of a few captions in three
    languages (random unit vectors when the folder has no caption encoder)."""
    _require_onnx()
    from ..model import LLM2CLIP
    from ..search.models import model_identity

    model = LLM2CLIP.from_pretrained(model_dir).eval().float()
    pixels, pixel_source = _check_pixels(model, check_images)
    embeddings, text_source = _check_embeddings(model)
    with atomic_folder(out_dir) as staging:
        image_diff = _export_and_check(ImageSide(model).eval(), pixels, staging / IMAGE_FILE, "pixel_values",
                                       "image_embeds", tolerance)
        text_diff = _export_and_check(TextSide(model).eval(), embeddings, staging / TEXT_FILE, "caption_embeddings",
                                      "text_embeds", tolerance)
        atomic_write_text(staging / PREPROCESS_FILE, json.dumps(_preprocessing(model, Path(model_dir)), indent=2) + "\n")
        manifest = {
            "format": "llm2clip-onnx-export", "model": str(Path(model_dir).resolve()),
            "identity": model_identity(model_dir), "opset": OPSET, "embed_dim": int(embeddings_dim(model)),
            "files": {IMAGE_FILE: {"input": "pixel_values", "shape": ["batch", *pixels.shape[1:]],
                                   "output": "image_embeds"},
                      TEXT_FILE: {"input": "caption_embeddings", "shape": ["batch", model.config.text_dim],
                                  "output": "text_embeds"}},
            "check": {"tolerance": tolerance, "batch_sizes": [1, 3],
                      "image_max_abs_diff": image_diff, "image_inputs": pixel_source,
                      "text_max_abs_diff": text_diff, "text_inputs": text_source},
        }
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def embeddings_dim(model) -> int:
    with torch.no_grad():
        return model.encode_text_embeddings(torch.zeros(1, model.config.text_dim)).shape[-1]


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(_INSTALL) from err


def _check_pixels(model, images: Sequence | None) -> tuple[torch.Tensor, str]:
    """3 pixel rows: of the given images (repeated if fewer), else of random noise images."""
    from PIL import Image

    from ..vision.image_loading import load_image

    if images:
        loaded = [image if isinstance(image, Image.Image) else load_image(image) for image in images]
        source = f"{len(loaded)} given image(s)"
    else:
        rng = np.random.default_rng(0)
        loaded = [Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)) for _ in range(3)]
        source = "3 random-noise images"
    return model.vision.preprocess((loaded * 3)[:max(3, len(loaded))]), source


@torch.no_grad()
def _check_embeddings(model) -> tuple[torch.Tensor, str]:
    if model.caption_encoder is not None:
        return model.caption_encoder.encode(list(CHECK_CAPTIONS)).float(), \
            f"the caption encoder's embeddings of {len(CHECK_CAPTIONS)} captions (en, de, zh)"
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(3, model.config.text_dim, generator=generator)
    return torch.nn.functional.normalize(rows, dim=-1), "3 random unit vectors"


def _export_and_check(module: nn.Module, inputs: torch.Tensor, path: Path, input_name: str, output_name: str,
                      tolerance: float) -> float:
    batch = torch.export.Dim("batch", min=1)
    example = inputs[:2].contiguous()
    with torch.no_grad():
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=[input_name],
                                    output_names=[output_name], opset_version=OPSET,
                                    dynamic_shapes=({0: batch},), verbose=False)
    program.save(str(path))
    return _check(module, inputs, path, input_name, tolerance)


@torch.no_grad()
def _check(module: nn.Module, inputs: torch.Tensor, path: Path, input_name: str, tolerance: float) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in (1, 3):
        rows = inputs[:size]
        expected = module(rows).numpy()
        got = session.run(None, {input_name: rows.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"{path.name}: onnxruntime gives shape {list(got.shape)} at batch {size}, "
                              f"PyTorch {list(expected.shape)}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > tolerance:
        raise ExportError(f"{path.name}: onnxruntime and PyTorch differ by up to {worst:.2e} (> {tolerance:g})")
    return worst


def _preprocessing(model, model_dir: Path) -> dict[str, Any]:
    """What a server must do to an image before image_encoder.onnx."""
    transform = getattr(model.vision, "transform", None)
    if transform is not None:  # our PIL + numpy transform (EfficientNet-Lite0, timm towers)
        return {"kind": "llm2clip.ImageTransform", **transform.to_dict(),
                "steps": "RGB; resize the shorter side to floor(size / crop_pct) (interpolation); centre-crop "
                         "size x size; /255; subtract mean, divide by std; CHW"}
    processor_file = model_dir / "vision" / "preprocessor_config.json"
    if processor_file.is_file():  # an HF tower: its image processor's settings
        return {"kind": "transformers image processor",
                "preprocessor_config": json.loads(processor_file.read_text(encoding="utf-8"))}
    raise ExportError(f"{model_dir}: cannot tell how this tower preprocesses images")

