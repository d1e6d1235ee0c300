"""Stage-1 model side: a decoder LLM as a caption embedding model (and, for the paper's
method d, concatenated with the original CLIP text embedding)."""
from .caption_encoder import CaptionEncoder
from .concat_encoder import ConcatTextEncoder, load_caption_encoder
from .settings import EncoderSettings, LoraSettings

__all__ = ["CaptionEncoder", "ConcatTextEncoder", "EncoderSettings", "LoraSettings", "load_caption_encoder"]
