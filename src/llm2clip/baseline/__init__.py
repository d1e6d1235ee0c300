"""The baseline a report compares LLM2CLIP against: a CLIP-style model with its own,
conventional text tower (captions cut at 77 tokens).

- `HFClipBaseline`: any HF `CLIPModel`/`SiglipModel` checkpoint, its own text tower (the
  paper's baseline: the original CLIP before LLM2CLIP post-training);
- `DualEncoder`: a pretrained image tower and a pretrained sentence encoder (MiniLM,
  embedded) aligned by linear projections: the demo's "pretrained CLIP" in miniature,
  trained by `train_dual_encoder` in seconds on a CPU.
"""
from .dual_encoder import DualEncoder
from .hf_clip import HFClipBaseline
from .text_tower import SentenceTextTower
from .train_dual_encoder import train_demo_baseline, train_dual_encoder

__all__ = ["DualEncoder", "HFClipBaseline", "SentenceTextTower", "train_dual_encoder", "train_demo_baseline"]
