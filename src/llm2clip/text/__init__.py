"""Stage-1 model side: a decoder LLM as a caption embedding model."""
from .caption_encoder import CaptionEncoder
from .settings import EncoderSettings, LoraSettings

__all__ = ["CaptionEncoder", "EncoderSettings", "LoraSettings"]
