"""The stage-1 recipe: what `llm2clip stage1 --config` reads (configs/stage1/*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..text.settings import LoraSettings

PAPER_INSTRUCTION = "Given a caption, retrieve a similar relevant caption."


@dataclass
class Stage1Model:
    name: str = "smollm2-135m"  # embedded short name, HF id, or folder
    pooling: str = "mean"  # mean | last | weighted_mean
    bidirectional: bool = True
    instruction: str | None = PAPER_INSTRUCTION
    max_length: int = 512
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # null = train all weights
    dtype: str = "float32"  # weights: float32 | bfloat16 | float16
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


@dataclass
class Stage1Data:
    train: str = ""  # caption records: CSV / TSV / JSONL / Karpathy JSON
    caption_fields: list[str] | None = None  # default: DreamLIP fields present, else caption(s)
    id_field: str = "id"
    image_field: str = "image"
    text_pairs: str | None = None  # JSONL {query, positive[, negative]}
    text_pair_ratio: float = 0.0  # share of training pairs drawn from text_pairs


@dataclass
class Stage1Train:
    output_dir: str = "runs/stage1"
    batch_size: int = 32  # caption pairs per process per micro-step
    grad_accum: int = 1  # micro-steps per optimiser step
    epochs: int = 1
    max_steps: int | None = None  # optimiser steps; overrides epochs when set
    lr: float = 2.0e-4
    weight_decay: float = 0.0
    warmup_steps: int = 300
    schedule: str = "linear"  # after warmup: linear | cosine | constant
    temperature: float = 0.02
    mntp_weight: float = 0.0  # > 0 adds masked next-token prediction
    mntp_probability: float = 0.2
    grad_clip: float = 1.0  # 0 disables
    precision: str = "auto"  # auto (bf16 on capable GPUs) | fp32 | bf16 | fp16
    device: str = "auto"  # auto | cpu
    seed: int = 42
    save_every: int = 100
    keep_checkpoints: int = 2
    save_merged: bool = False  # also write a merged plain-HF folder at the end


@dataclass
class Stage1Eval:
    cra: str | None = None  # records to measure caption retrieval accuracy on, before and after
    cra_fields: list[str] | None = None
    cra_limit: int | None = None  # first N records only
    batch_size: int = 64


@dataclass
class Stage1Config:
    model: Stage1Model = field(default_factory=Stage1Model)
    data: Stage1Data = field(default_factory=Stage1Data)
    train: Stage1Train = field(default_factory=Stage1Train)
    eval: Stage1Eval = field(default_factory=Stage1Eval)
