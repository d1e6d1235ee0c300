"""The settings every training run has, whichever the stage: `Stage1Train` and
`Stage2Train` extend them with their own (learning rates, objective, mode)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..choices import DEVICES, PRECISIONS, SCHEDULES
from ..config import ConfigError, setting

MAX_SEED = 2**32 - 1  # per-step seeds are derived from it and must stay within 64 bits


@dataclass
class RunSettings:
    output_dir: str = "runs/train"
    batch_size: int = setting(32, at_least=1)  # samples (stage 1: caption pairs) per process per micro-step
    grad_accum: int = setting(1, at_least=1)  # micro-steps per optimiser step
    # GradCache (grad_cache.py): embed each micro-step's batch in pieces of this many samples
    # (pairs), so the contrastive batch is bounded by the loss, not by the encoder's memory
    micro_batch: int | None = setting(None, at_least=1, null="the whole batch at once")
    epochs: int = setting(1, at_least=1)
    max_steps: int | None = setting(None, at_least=1, null="train.epochs decide")  # optimiser steps
    warmup_steps: int = setting(300, at_least=0)
    schedule: str = setting("linear", choices=SCHEDULES)  # after warmup
    grad_clip: float = setting(1.0, at_least=0)  # 0 disables
    precision: str = setting("auto", choices=PRECISIONS)  # auto: bf16 on capable GPUs
    device: str = setting("auto", choices=DEVICES)  # auto: the GPU if there is one
    seed: int = setting(42, at_least=0, at_most=MAX_SEED)
    save_every: int = setting(100, at_least=1)
    keep_checkpoints: int = setting(2, at_least=0)  # 0 keeps every checkpoint
    # shard the LLM across the processes (fsdp.py: torch's fully_shard per decoder layer)
    # instead of replicating it (accelerate's DDP); needs 2+ processes (torchrun)
    fsdp: bool = False

    def check(self) -> None:
        """What the per-field ranges cannot say."""
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise ConfigError(f"train.micro_batch ({self.micro_batch}) must divide train.batch_size "
                              f"({self.batch_size}): the batch is embedded in equal pieces")
        if self.micro_batch and self.precision == "fp16":
            raise ConfigError("train.micro_batch works in fp32 and bf16, not fp16 (its loss scaling would "
                              "have to scale the cached gradients too)")
        if self.fsdp and self.precision == "fp16":
            raise ConfigError("train.fsdp computes in fp32 or bf16 (train.precision), not fp16: FSDP has no "
                              "loss scaling here")
        if self.fsdp and self.micro_batch:
            raise ConfigError("train.fsdp and train.micro_batch (GradCache) do not go together: GradCache embeds "
                              "outside the sharded model's forward, where FSDP gathers the weights; unset one")

    def refuse_inside(self, key: str, folder: str) -> None:
        """The model folder the config names at `key` must not lie inside output_dir: a fresh
        run sets that folder's earlier outputs aside and replaces final/ at the end."""
        inner, out = Path(folder).resolve(), Path(self.output_dir).resolve()
        if inner.exists() and (inner == out or out in inner.parents):
            raise ConfigError(f"{key} ({folder}) lies inside train.output_dir ({self.output_dir}), which this run "
                              "writes into; copy it elsewhere or choose another train.output_dir")


def default(name: str, value: Any) -> Any:
    """RunSettings' field `name` with a stage's own default; the values it accepts stay."""
    return dataclasses.field(default=value, metadata=RunSettings.__dataclass_fields__[name].metadata)
