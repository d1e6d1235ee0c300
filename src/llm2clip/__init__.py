"""LLM2CLIP: a large language model as CLIP's text tower."""
from .text import CaptionEncoder

__all__ = ["CaptionEncoder"]
__version__ = "0.1.0"
