"""Where llm2clip keeps converted models and other reusable artefacts."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$LLM2CLIP_CACHE`, else `$XDG_CACHE_HOME/llm2clip`, else `~/.cache/llm2clip`."""
    if os.environ.get("LLM2CLIP_CACHE"):
        return Path(os.environ["LLM2CLIP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "llm2clip"
