"""The stage-1 recipe: what `llm2clip stage1 --config` reads (configs/stage1/*.yaml).

Each setting declares the values it accepts (`setting(...)`, checked by config.check_config).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..choices import SIMCSE_MODES, WEIGHT_DTYPES
from ..config import ConfigError, check_config, setting
from ..text.pooling import POOLINGS
from ..text.settings import LoraSettings
from .run_settings import RunSettings

PAPER_INSTRUCTION = "Given a caption, retrieve a similar relevant caption."


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
class Stage1Train(RunSettings):
    output_dir: str = "runs/stage1"
    lr: float = setting(2.0e-4, above=0)
    weight_decay: float = setting(0.0, at_least=0)
    temperature: float = setting(0.02, above=0)
    # Table 9: supervised (two captions of one image), unsupervised (one caption twice,
    # dropout as the augmentation) or none (MNTP alone: needs mntp_weight > 0)
    simcse: str = setting("supervised", choices=SIMCSE_MODES)
    mntp_weight: float = setting(0.0, at_least=0)  # > 0 adds masked next-token prediction
    mntp_probability: float = setting(0.2, above=0, below=1)  # share of caption tokens masked
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
        self.train.check()
        self.train.refuse_inside("model.name", self.model.name)
        self._check_simcse()

    def _check_simcse(self) -> None:
        t = self.train
        if t.simcse == "none" and t.mntp_weight <= 0:
            raise ConfigError("train.simcse: none trains MNTP alone, but train.mntp_weight is 0: set "
                              "train.mntp_weight > 0 or choose train.simcse supervised or unsupervised")
        if t.simcse == "none" and t.micro_batch:
            raise ConfigError("train.micro_batch (GradCache) splits a contrastive batch, and train.simcse: none "
                              "has none: leave train.micro_batch unset")
        if t.simcse == "unsupervised" and self.data.text_pair_ratio > 0:
            raise ConfigError("train.simcse: unsupervised pairs each caption with itself, so the positives and "
                              "negatives of data.text_pairs would be ignored: set data.text_pair_ratio to 0")
