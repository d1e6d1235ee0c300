"""Text encoders (protocol.py: `dim`, `max_tokens`, `identity()`, `encode` -> rows and how
many inputs were cut): a decoder LLM as a caption embedding model (stage 1) and, for the
paper's method d, that embedding concatenated with the original CLIP text embedding."""
from .caption_encoder import CaptionEncoder
from .concat_encoder import ConcatTextEncoder, load_caption_encoder
from .protocol import TextEmbeddings, TextEncoder
from .settings import EncoderSettings, LoraSettings

__all__ = ["CaptionEncoder", "ConcatTextEncoder", "EncoderSettings", "LoraSettings", "TextEmbeddings", "TextEncoder",
           "load_caption_encoder"]
