"""The stage-1 recipe: what `llm2clip stage1 --config` reads (configs/stage1/*.yaml).

Each setting declares the values it accepts (`setting(...)`, checked by config.check_config).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..adaptor import check_adaptor_options
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
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # null = train all weights (unless freeze_llm)
    # Table 9's frozen row: train none of the LLM's weights, only model.adaptor (needs lora: null)
    freeze_llm: bool = False
    # Tables 8 and 9: an adaptor over the pooled output, LLM width in and out ({kind: mlp |
    # transformer, ...options}, as stage 2's model.adaptor); saved with the encoder, applied when embedding
    adaptor: dict[str, Any] | None = None
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
        self._check_adaptor()

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

    def _check_adaptor(self) -> None:
        m, t = self.model, self.train
        if m.adaptor is not None:
            check_adaptor_options(m.adaptor, "model.adaptor")
        if m.freeze_llm and m.lora is not None:
            raise ConfigError("model.freeze_llm trains none of the LLM's weights, but model.lora would train its "
                              "LoRA: set model.lora: null (or model.freeze_llm: false)")
        if m.freeze_llm and m.adaptor is None:
            raise ConfigError("model.freeze_llm leaves nothing to train without model.adaptor: set model.adaptor "
                              "(e.g. {kind: mlp, num_blocks: 4}) or model.freeze_llm: false")
        if m.freeze_llm and t.mntp_weight > 0:
            raise ConfigError("train.mntp_weight > 0 trains the LLM by MNTP, and model.freeze_llm freezes it: set "
                              "train.mntp_weight: 0 or model.freeze_llm: false")
        if m.adaptor is not None and t.simcse == "none":
            raise ConfigError("model.adaptor learns from the SimCSE term only, and train.simcse: none has none (it "
                              "would be saved untrained): choose train.simcse supervised or unsupervised")
        if m.adaptor is not None and t.fsdp:
            raise ConfigError("train.fsdp shards the LLM's decoder layers; model.adaptor beside it is not "
                              "supported under FSDP: unset one")
