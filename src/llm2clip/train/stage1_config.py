"""The stage-1 recipe: what `llm2clip stage1 --config` reads (configs/stage1/*.yaml).

Each setting declares the values it accepts (`setting(...)`, checked by config.check_config).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..choices import DEVICES, PRECISIONS, SCHEDULES, WEIGHT_DTYPES
from ..config import ConfigError, check_config, setting
from ..text.pooling import POOLINGS
from ..text.settings import LoraSettings

PAPER_INSTRUCTION = "Given a caption, retrieve a similar relevant caption."
MAX_SEED = 2**32 - 1  # per-step seeds are derived from it and must stay within 64 bits


@dataclass
class Stage1Model:
    name: str = "smollm2-135m"  # embedded short name, HF id, or folder
    pooling: str = setting("mean", choices=tuple(POOLINGS))
    bidirectional: bool = True
    instruction: str | None = PAPER_INSTRUCTION
    max_length: int = setting(512, at_least=2)
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # null = train all weights
    dtype: str = setting("float32", choices=WEIGHT_DTYPES)  # how the weights are loaded
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


@dataclass
class Stage1Data:
    train: str = ""  # caption records: CSV / TSV / JSONL / Karpathy JSON
    caption_fields: list[str] | None = None  # default: DreamLIP fields present, else caption(s)
    id_field: str = "id"
    image_field: str = "image"
    text_pairs: str | None = None  # JSONL {query, positive[, negative]}
    text_pair_ratio: float = setting(0.0, at_least=0, at_most=1)  # share of training pairs drawn from text_pairs


@dataclass
class Stage1Train:
    output_dir: str = "runs/stage1"
    batch_size: int = setting(32, at_least=1)  # caption pairs per process per micro-step
    grad_accum: int = setting(1, at_least=1)  # micro-steps per optimiser step
    epochs: int = setting(1, at_least=1)
    max_steps: int | None = setting(None, at_least=1, null="train.epochs decide")  # optimiser steps
    lr: float = setting(2.0e-4, above=0)
    weight_decay: float = setting(0.0, at_least=0)
    warmup_steps: int = setting(300, at_least=0)
    schedule: str = setting("linear", choices=SCHEDULES)  # after warmup
    temperature: float = setting(0.02, above=0)
    mntp_weight: float = setting(0.0, at_least=0)  # > 0 adds masked next-token prediction
    mntp_probability: float = setting(0.2, above=0, below=1)  # share of caption tokens masked
    grad_clip: float = setting(1.0, at_least=0)  # 0 disables
    precision: str = setting("auto", choices=PRECISIONS)  # auto: bf16 on capable GPUs
    device: str = setting("auto", choices=DEVICES)  # auto: the GPU if there is one
    seed: int = setting(42, at_least=0, at_most=MAX_SEED)
    save_every: int = setting(100, at_least=1)
    keep_checkpoints: int = setting(2, at_least=0)  # 0 keeps every checkpoint
    save_merged: bool = False  # also write a merged plain-HF folder at the end


@dataclass
class Stage1Eval:
    cra: str | None = None  # records to measure caption retrieval accuracy on, before and after
    cra_fields: list[str] | None = None
    cra_limit: int | None = setting(None, at_least=1, null="all records")  # first N records only
    batch_size: int = setting(64, at_least=1)


@dataclass
class Stage1Config:
    model: Stage1Model = field(default_factory=Stage1Model)
    data: Stage1Data = field(default_factory=Stage1Data)
    train: Stage1Train = field(default_factory=Stage1Train)
    eval: Stage1Eval = field(default_factory=Stage1Eval)

    def validate(self) -> None:
        check_config(self)
        model, out = Path(self.model.name).resolve(), Path(self.train.output_dir).resolve()
        if model.exists() and (model == out or out in model.parents):
            # a fresh run sets the folder's earlier outputs aside, and final/ is replaced at the end
            raise ConfigError(f"model.name ({self.model.name}) lies inside train.output_dir "
                              f"({self.train.output_dir}), which this run writes into; copy the model elsewhere "
                              "or choose another train.output_dir")
