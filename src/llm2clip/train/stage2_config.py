"""The stage-2 recipe: what `llm2clip stage2 --config` reads (configs/stage2/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..multi_encoder import check_terms

MODES = ("offline", "online_frozen", "online_lora")
LOSSES = ("clip", "siglip")


@dataclass
class Stage2Model:
    vision: str = "efficientnet-lite0"  # embedded short name, HF CLIP/SigLIP id, or folder
    caption_encoder: str = ""  # the stage-1 folder (its identity must match the store)
    embed_dim: int = 1280  # 1280 for OpenAI/EVA02 ViT-L, 1152 for SigLIP2-SO400M
    adaptor: dict[str, Any] = field(default_factory=lambda: {"kind": "mlp", "num_blocks": 4, "expansion": 2})
    logit_scale_init: float = 14.285714  # 1 / 0.07
    logit_bias_init: float = -10.0  # used by the sigmoid loss only
    max_logit_scale: float = 100.0
    gradient_checkpointing: bool = False  # the vision tower, and the caption encoder when online_lora trains it
    frozen_vision_groups: int = 0  # freeze the tower's first N layer groups (0: all trained, as the paper)
    # with the whole tower frozen (frozen_vision_groups = all, LiT-style), compute each image's
    # tower features once before training: only the projection, adaptor and scale train
    cache_image_features: bool = False
    # Table 10's method. [llm] = (a): the adaptor over the caption embedding (given a concat
    # caption encoder, the "concat, single head" variant). [llm, clip_text, cat] = (d): a head
    # per encoder and one on their concatenation, three contrastive losses; needs a concat
    # caption encoder (`llm2clip concat-encoder`). See multi_encoder.py.
    loss_terms: list[str] = field(default_factory=lambda: ["llm"])
    cat_dim: int | None = None  # (d): the concatenation head's width (default 2 x embed_dim, Appendix A)


@dataclass
class Stage2Data:
    train: str = ""  # caption records (CSV/TSV/JSONL) with an image path per row
    # or webdataset shards (img2dataset layout), streamed: "shards/{00000..00999}.tar", URLs, "pipe:..."
    train_shards: str | None = None
    samples_per_epoch: int | None = None  # with train_shards: what train.epochs counts (else set max_steps)
    resampled: bool = False  # with train_shards: draw shards with replacement instead of epoch-wise
    image_root: str | None = None  # image paths resolve here (default: the data file's folder)
    id_field: str = "id"
    image_field: str = "image"
    real_fields: list[str] = field(default_factory=lambda: ["raw_caption"])
    dense_fields: list[str] = field(default_factory=lambda: ["longSV", "longIB", "longLLA"])
    dense_ratio: float = 0.5  # share of samples that train on a dense caption (Table 7)
    embeddings: str | None = None  # the store from `llm2clip embed` (offline mode)
    num_workers: int = 2


@dataclass
class Stage2Train:
    mode: str = "offline"  # offline | online_frozen | online_lora (Table 11)
    loss: str = "clip"  # clip | siglip
    output_dir: str = "runs/stage2"
    batch_size: int = 128  # samples per process per micro-step
    grad_accum: int = 1
    epochs: int = 4
    max_steps: int | None = None
    lr_vision: float = 1.0e-5
    lr_adaptor: float = 1.0e-4
    lr_logit_scale: float = 1.0e-4
    lr_llm: float = 1.0e-4  # online_lora only
    weight_decay_vision: float = 0.05
    weight_decay_adaptor: float = 0.05
    layer_decay: float = 0.85  # lr of tower layer i = lr_vision * decay^(layers above it)
    warmup_steps: int = 500
    schedule: str = "cosine"
    grad_clip: float = 5.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 42
    save_every: int = 500
    keep_checkpoints: int = 2


@dataclass
class Stage2Config:
    model: Stage2Model = field(default_factory=Stage2Model)
    data: Stage2Data = field(default_factory=Stage2Data)
    train: Stage2Train = field(default_factory=Stage2Train)

    def validate(self) -> None:
        if self.train.mode not in MODES:
            raise ValueError(f"train.mode must be one of {MODES}, got {self.train.mode!r}")
        if self.train.loss not in LOSSES:
            raise ValueError(f"train.loss must be one of {LOSSES}, got {self.train.loss!r}")
        if bool(self.data.train) == bool(self.data.train_shards):
            raise ValueError("set exactly one of data.train (image-caption records) and data.train_shards "
                             "(webdataset shards)")
        if self.data.train_shards and not self.train.max_steps and not self.data.samples_per_epoch:
            raise ValueError("streamed shards have no known length: set train.max_steps or data.samples_per_epoch")
        if self.train.mode == "offline" and not self.data.embeddings:
            raise ValueError("offline mode needs data.embeddings (a store written by `llm2clip embed`)")
        if not self.model.caption_encoder:
            raise ValueError("model.caption_encoder is required (the stage-1 folder)")
        check_terms(self.model.loss_terms, "model.loss_terms")
