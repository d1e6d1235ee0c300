"""Shared fixtures: tiny random LLMs (hidden 32) with a local tokenizer; nothing downloads."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): one thread each, so the
    # workers do not fight over the cores (torch would start one thread per core in each)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from helpers import save_lora_with_random_b  # noqa: E402

from llm2clip.testing.random_llm import save_random_llm  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llms(tmp_path_factory):
    """{'llama': path, 'qwen2': path}: random 2-layer models saved as HF folders."""
    root = tmp_path_factory.mktemp("tiny-llms")
    return {arch: str(save_random_llm(root / arch, arch)) for arch in ("llama", "qwen2")}


@pytest.fixture(scope="session")
def tiny_llama(tiny_llms):
    return tiny_llms["llama"]


@pytest.fixture(params=["llama", "qwen2"])
def tiny_llm(request, tiny_llms):
    return tiny_llms[request.param]


def save_tiny_vision(directory, arch: str = "clip", seed: int = 0):
    """A random 2-layer CLIP or SigLIP vision tower (hidden 32, 32x32 images) + processor."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, SiglipImageProcessor,
                              SiglipVisionConfig, SiglipVisionModel)

    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                image_size=32, patch_size=8)
    torch.manual_seed(seed)
    if arch == "clip":
        model = CLIPVisionModel(CLIPVisionConfig(**size))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = SiglipVisionModel(SiglipVisionConfig(**size))
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_visions(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-vision")
    return {arch: save_tiny_vision(root / arch, arch) for arch in ("clip", "siglip")}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A random CLIPModel (hidden 32, projection 24) with MiniLM's WordPiece tokenizer (EOS = [SEP])."""
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from llm2clip.baseline.text_tower import embedded_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_minilm_path())
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(text_config={**tower, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 77,
                                     "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id},
                        vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=24)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def trained_stage1_folder(tiny_llama, tmp_path_factory):
    """A stage-1 folder as training leaves it: a LoRA whose B is non-zero (a fresh LoRA's B
    is 0, so dropping the adapter would change nothing) and dropout 0.1 (an encoder left in
    train mode gives other numbers than the store)."""
    return save_lora_with_random_b(tiny_llama, tmp_path_factory.mktemp("trained-stage1") / "final", dropout=0.1, seed=7)


@pytest.fixture(scope="session")
def fast_demo_steps(tmp_path_factory):
    """A `llm2clip demo --fast` folder with the steps the ablations build on (data, baseline,
    stage 1, the two stores) and not the rest (stage 2, eval, search): about a minute."""
    from llm2clip.demo.ablate import prepare_demo

    folder = tmp_path_factory.mktemp("fast-demo") / "demo"
    prepare_demo(folder, fast=True)
    return folder
