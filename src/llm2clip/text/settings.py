"""The settings that define a caption encoder's embedding (its identity) and its LoRA."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import setting
from .pooling import POOLINGS

PADDING_SIDES = ("right", "left")
# The paper's LoRA targets: every attention and MLP projection of a Llama-style block.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """LoRA on the LLM (paper: r=16, alpha=32, dropout 0.05 on all projections)."""

    r: int = setting(16, at_least=1)
    alpha: int = setting(32, above=0)
    dropout: float = setting(0.05, at_least=0, below=1)
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    @classmethod
    def coerce(cls, value: Any) -> "LoraSettings | None":
        """None/False -> no LoRA; True -> paper defaults; dict -> overrides; or an instance."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ValueError(
                    f"unknown LoRA key(s) {unknown}; valid keys: {sorted(cls.__dataclass_fields__)}"
                )
            return cls(**value)
        raise TypeError(f"lora must be None, True, a dict or LoraSettings, got {value!r}")


@dataclass
class EncoderSettings:
    """Everything besides the weights that determines an embedding.

    `base_model` is the name the LLM was loaded from (a short embedded name, a hub id or
    a path); it is what an adapter-format save points back to.
    """

    base_model: str
    pooling: str = "mean"
    bidirectional: bool = True
    instruction: str | None = None
    max_length: int = 512
    # an adaptor over the pooled output ({kind, ...options}; encoder_adaptor.py), or None
    adaptor: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {tuple(POOLINGS)}, got {self.pooling!r}")
        if int(self.max_length) < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}")
        if self.instruction is not None and not self.instruction.strip():
            self.instruction = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["adaptor"] is None:  # absent, as in every folder and identity before adaptors
            del data["adaptor"]
        return data

    def identity(self) -> dict[str, Any]:
        """The fields that change embeddings (for cache keys and store headers)."""
        return self.to_dict()
