"""The stage-2 recipe: what `llm2clip stage2 --config` reads (configs/stage2/*.yaml).

Each setting declares the values it accepts (`setting(...)`, checked by config.check_config).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..adaptor import check_adaptor_options
from ..choices import MODES
from ..config import ConfigError, check_config, setting
from ..losses import LOSSES
from ..multi_encoder import check_terms
from .run_settings import RunSettings, default

__all__ = ["LOSSES", "MODES", "Stage2Config", "Stage2Data", "Stage2Model", "Stage2Train"]


@dataclass
class Stage2Model:
    vision: str = "efficientnet-lite0"  # embedded short name, HF CLIP/SigLIP id, or folder
    caption_encoder: str = ""  # the stage-1 folder (its identity must match the store)
    embed_dim: int = setting(1280, at_least=1)  # 1280 for OpenAI/EVA02 ViT-L, 1152 for SigLIP2-SO400M
    # {kind: mlp | transformer, ...the adaptor's options}
    adaptor: dict[str, Any] = field(default_factory=lambda: {"kind": "mlp", "num_blocks": 4, "expansion": 2})
    logit_scale_init: float = setting(14.285714, above=0)  # 1 / 0.07; the parameter is its log
    logit_bias_init: float = -10.0  # used by the sigmoid loss only
    max_logit_scale: float = setting(100.0, above=0)
    gradient_checkpointing: bool = False  # the vision tower, and the caption encoder when online_lora trains it
    # freeze the tower's first N layer groups (0: all trained, as the paper)
    frozen_vision_groups: int = setting(0, at_least=0)
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
    # with train_shards: what train.epochs counts (else set max_steps)
    samples_per_epoch: int | None = setting(None, at_least=1, null="train.max_steps decides")
    resampled: bool = False  # with train_shards: draw shards with replacement instead of epoch-wise
    # with train_shards: samples in webdataset's shuffle buffer (per DataLoader worker; 0: off), so
    # batches, and their in-batch negatives, change every epoch. 5000 is open_clip's webdataset
    # sample-shuffle size: raw (undecoded) samples, ~100 MB per worker at ~20 KB per JPEG
    shuffle_buffer: int = setting(5000, at_least=0)
    image_root: str | None = None  # image paths resolve here (default: the data file's folder)
    id_field: str = "id"
    image_field: str = "image"
    real_fields: list[str] = field(default_factory=lambda: ["raw_caption"])
    dense_fields: list[str] = field(default_factory=lambda: ["longSV", "longIB", "longLLA"])
    dense_ratio: float = setting(0.5, at_least=0, at_most=1)  # share of samples that train on a dense caption (Table 7)
    embeddings: str | None = None  # the store from `llm2clip embed` (offline mode)
    num_workers: int = setting(2, at_least=0)


@dataclass
class Stage2Train(RunSettings):
    mode: str = setting("offline", choices=MODES)  # the text side (Table 11)
    loss: str = setting("clip", choices=tuple(LOSSES))
    output_dir: str = "runs/stage2"
    batch_size: int = default("batch_size", 128)
    epochs: int = default("epochs", 4)
    lr_vision: float = setting(1.0e-5, above=0)
    lr_adaptor: float = setting(1.0e-4, above=0)
    lr_logit_scale: float = setting(1.0e-4, at_least=0)  # 0 keeps the initial temperature
    lr_llm: float = setting(1.0e-4, above=0)  # online_lora only
    weight_decay_vision: float = setting(0.05, at_least=0)
    weight_decay_adaptor: float = setting(0.05, at_least=0)
    # lr of tower layer i = lr_vision * decay^(layers above it)
    layer_decay: float = setting(0.85, above=0, at_most=1)
    warmup_steps: int = default("warmup_steps", 500)
    schedule: str = default("schedule", "cosine")
    grad_clip: float = default("grad_clip", 5.0)
    save_every: int = default("save_every", 500)


@dataclass
class Stage2Config:
    model: Stage2Model = field(default_factory=Stage2Model)
    data: Stage2Data = field(default_factory=Stage2Data)
    train: Stage2Train = field(default_factory=Stage2Train)

    def validate(self) -> None:
        check_config(self)
        self.train.check()
        if self.train.fsdp and self.train.mode == "offline":
            raise ConfigError("train.fsdp shards the LLM, and offline stage 2 has none in the loop (it reads the "
                              "stored embeddings): use train.mode online_frozen or online_lora, or leave train.fsdp "
                              "false")
        self._check_adaptor()
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
        self.train.refuse_inside("model.caption_encoder", self.model.caption_encoder)

    def _check_adaptor(self) -> None:
        """model.adaptor names a kind and only options its class takes (before anything loads)."""
        check_adaptor_options(self.model.adaptor, "model.adaptor")
