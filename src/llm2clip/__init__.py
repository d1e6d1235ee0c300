"""LLM2CLIP: a large language model as CLIP's text tower.

The public classes are imported lazily so that `import llm2clip.losses` (and every
distributed worker) does not pay for importing transformers.
"""
__all__ = ["CaptionEncoder", "LLM2CLIP"]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "CaptionEncoder":
        from .text import CaptionEncoder

        return CaptionEncoder
    if name == "LLM2CLIP":
        from .model import LLM2CLIP

        return LLM2CLIP
    raise AttributeError(f"module 'llm2clip' has no attribute {name!r}")
