"""The caption-encoder folder (`CaptionEncoder.save_pretrained`) and its one reader.

A folder holds `caption_encoder.json` (`format`: `adapter`, `full` or `base`, plus the
settings that define the embedding) and the tokenizer files; with `adapter`, peft's
`adapter_config.json` + `adapter_model.safetensors`; with `full`, a plain HF model
folder; with `base`, no LLM weights (the LLM is the base model unchanged: a frozen LLM
under a trained adaptor). When the settings name an adaptor, `adaptor.safetensors`
holds it (encoder_adaptor.py). `CaptionEncoder.from_pretrained` and the encoder identity (identity.py) both read
it here, so the format is parsed in one place.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETTINGS_FILE = "caption_encoder.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # the name peft saves an adapter under
ADAPTOR_FILE = "adaptor.safetensors"  # the adaptor over the pooled output (encoder_adaptor.py)
FORMATS = ("adapter", "full", "base")


@dataclass(frozen=True)
class SavedEncoder:
    folder: Path
    format: str  # "adapter", "full" or "base"
    settings: dict[str, Any]  # EncoderSettings fields as saved

    def weight_files(self) -> list[Path]:
        """The safetensors files holding what differs from the base model: the adapter, or
        every model shard (empty when the weights are not safetensors), and the adaptor."""
        adaptor = self.folder / ADAPTOR_FILE
        adaptors = [adaptor] if adaptor.is_file() else []
        if self.format == "adapter":
            adapter = self.folder / ADAPTER_WEIGHTS
            return [adapter, *adaptors] if adapter.is_file() else []
        if self.format == "base":
            return adaptors
        return sorted(p for p in self.folder.glob("*.safetensors") if p.name != ADAPTER_WEIGHTS)


def read_encoder_folder(path: str | os.PathLike) -> SavedEncoder | None:
    """The saved encoder at `path`, or None when `path` is not a caption-encoder folder
    (a base LLM's name or folder)."""
    file = Path(path) / SETTINGS_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: unreadable caption-encoder settings: {err}") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        found = data.get("format") if isinstance(data, dict) else data
        raise ValueError(f"{file}: 'format' must be one of {FORMATS}, got {found!r}")
    settings = {k: v for k, v in data.items() if k != "format"}
    return SavedEncoder(Path(path), data["format"], settings)


def settings_file_text(fmt: str, settings: dict[str, Any]) -> str:
    """What `save_pretrained` writes to `caption_encoder.json`."""
    return json.dumps({"format": fmt, **settings}, indent=2) + "\n"
