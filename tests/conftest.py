"""Shared fixtures: tiny random LLMs (hidden 32) with a local tokenizer; nothing downloads."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from llm2clip.text.random_llm import save_random_llm  # noqa: E402


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
