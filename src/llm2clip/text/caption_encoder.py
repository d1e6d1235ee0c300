"""CaptionEncoder: any Hugging Face decoder LLM as a caption embedding model (stage 1).

Bidirectional attention comes from `config.is_causal = False` (transformers 5 builds a
bidirectional mask for Llama, Qwen2, Mistral, ... with sdpa and eager attention). LoRA
comes from peft. A saved encoder is a folder with `caption_encoder.json` plus either a
LoRA adapter (pointing back to its base model) or a full HF model folder, or - for a
frozen base LLM under a trained adaptor - neither (the base model is named). An optional
adaptor over the pooled output (encoder_adaptor.py) is saved beside them.
"""
from __future__ import annotations

import copy
import logging
import os
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..atomic_file import atomic_write_text
from ..safe_loading import require_safetensors
from .encoder_adaptor import adaptor_tensors, build_encoder_adaptor, load_adaptor, save_adaptor
from .encoder_folder import SETTINGS_FILE, read_encoder_folder, settings_file_text
from .fingerprint import fingerprint_tensors
from .model_names import resolve_llm
from .pooling import pool
from .protocol import TextEmbeddings
from .settings import EncoderSettings, LoraSettings
from .tokenization import CaptionTokenizer, TokenizedCaption, plan_length_batches

log = logging.getLogger(__name__)

_UNSET: Any = object()  # distinguishes "not given" from an explicit None


class CaptionEncoder(nn.Module):
    """Embeds captions: tokenise -> LLM (bi- or causal attention) -> pool -> L2-normalise."""

    def __init__(self, model: nn.Module, tokenizer, settings: EncoderSettings, lm_head: nn.Module | None = None,
                 adaptor: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.adaptor = adaptor  # over the pooled output (settings.adaptor), or None
        # whether `model` holds exactly the weights of settings.base_model (a base LLM or a
        # "base"-format folder), and whether it is frozen so: then a save names it instead
        self.llm_is_base = False
        self.llm_frozen_base = False
        self.tokenizer = tokenizer
        self.settings = settings
        self.lm_head = lm_head  # only for the MNTP objective; frozen (see _load_llm)
        self.padding_side = "right"
        self.autocast_dtype: torch.dtype | None = None
        # captions cut to max_length by `tokenize` (the training batches) since creation;
        # `encode` reports its own count in its result instead
        self.num_truncated = 0
        self._tokenize = CaptionTokenizer(tokenizer, settings.instruction, settings.max_length)
        self.set_bidirectional(settings.bidirectional)

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        pooling: str = _UNSET,
        bidirectional: bool = _UNSET,
        instruction: str | None = _UNSET,
        max_length: int = _UNSET,
        lora: Any = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        precision: str = "auto",
        lm_head: bool = False,
        trust_remote_code: bool = False,
        adaptor: dict[str, Any] | None = None,
    ) -> "CaptionEncoder":
        """Load a base LLM (short name, hub id, folder) or a saved CaptionEncoder folder.

        For a saved folder its own settings apply unless given here. Defaults for a base
        LLM: pooling="mean", bidirectional=True, instruction=None, max_length=512.
        `lora`: None (no adapter), True (paper defaults), a dict or LoraSettings.
        `adaptor`: a new adaptor ({kind, ...options}) over the pooled output; a saved
        folder's own adaptor is always loaded.
        """
        path = str(path)
        options = dict(pooling=pooling, bidirectional=bidirectional, instruction=instruction, max_length=max_length)
        given = {k: v for k, v in options.items() if v is not _UNSET}
        saved = read_encoder_folder(path)
        load_kwargs = {"dtype": _as_dtype(dtype), "trust_remote_code": trust_remote_code, "use_safetensors": True}
        require_safetensors(path)
        if saved is not None and adaptor is not None and saved.settings.get("adaptor") is not None:
            raise ValueError(f"{path} already holds an adaptor; do not pass adaptor=")
        if adaptor is not None:
            given["adaptor"] = dict(adaptor)
        if saved is None:
            settings = EncoderSettings(base_model=path, **given)
            model, head = _load_llm(resolve_llm(path), lm_head, load_kwargs)
            tokenizer = _load_tokenizer(resolve_llm(path), trust_remote_code)
            lora = LoraSettings.coerce(lora)
            if lora is not None:
                model = _add_lora(model, lora)
        else:
            settings = EncoderSettings(**{**saved.settings, **given})
            tokenizer = _load_tokenizer(path, trust_remote_code)
            if saved.format == "adapter":
                if LoraSettings.coerce(lora) is not None:
                    raise ValueError(f"{path} already holds a LoRA adapter; do not pass lora=")
                from peft import PeftModel

                model, head = _load_llm(resolve_llm(settings.base_model), lm_head, load_kwargs)
                with _quiet_peft():
                    model = PeftModel.from_pretrained(model, path, is_trainable=True)
            elif saved.format == "base":
                model, head = _load_llm(resolve_llm(settings.base_model), lm_head, load_kwargs)
                lora = LoraSettings.coerce(lora)
                if lora is not None:
                    model = _add_lora(model, lora)
            else:
                model, head = _load_llm(path, lm_head, load_kwargs)
                lora = LoraSettings.coerce(lora)
                if lora is not None:
                    model = _add_lora(model, lora)
        encoder = cls(model, tokenizer, settings, head, _adaptor_for(settings, saved, model))
        encoder.llm_is_base = saved is None or saved.format == "base"
        if saved is not None and saved.format == "base" and not encoder.has_lora:
            encoder.set_llm_trainable(False)  # as in its training: a save names the base model again
        encoder.eval()
        if device is not None:
            encoder.to(device)
        encoder.set_precision(precision)
        return encoder

    # ---------------------------------------------------------------- settings
    def set_llm_trainable(self, on: bool) -> None:
        """Whether training changes the LLM's own weights (LoRA's aside). Off is Table 9's
        frozen row, where only the adaptor learns; a base LLM frozen so is saved by name,
        without its weights (format "base")."""
        if self.has_lora and not on:
            raise ValueError("this encoder has LoRA, which would train: load it with lora=None to freeze the LLM")
        self.model.requires_grad_(on)
        self.llm_frozen_base = self.llm_is_base and not on

    def set_bidirectional(self, on: bool) -> None:
        """Switch attention between bidirectional and causal (read at every forward)."""
        self.settings.bidirectional = bool(on)
        self.base_config.is_causal = not on

    def set_precision(self, precision: str) -> None:
        """"auto": bf16 autocast on GPUs that support it, else fp32; or fp32/bf16/fp16."""
        if precision == "auto":
            cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            self.autocast_dtype = torch.bfloat16 if cuda_bf16 else None
        else:
            self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def gradient_checkpointing_enable(self) -> None:
        # non-reentrant checkpointing works with a frozen base model and LoRA inputs
        self.base_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})

    @property
    def base_model(self) -> nn.Module:
        """The transformer without any peft wrapper."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def base_config(self):
        return self.base_model.config

    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def dim(self) -> int:
        return int(self.base_config.hidden_size)

    @property
    def max_tokens(self) -> int:
        """The longest tokenised input (instruction and EOS included); `settings.max_length`."""
        return self.settings.max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- encoding
    def tokenize_one(self, caption: str) -> TokenizedCaption:
        return self._tokenize(caption)

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Captions -> a padded batch for `forward` (adds its truncations to `num_truncated`)."""
        items = [self._tokenize(c) for c in captions]
        self.num_truncated += sum(item.truncated for item in items)
        return self._tokenize.collate(items, self.padding_side)

    def collate(self, items: list[TokenizedCaption]) -> dict[str, torch.Tensor]:
        return self._tokenize.collate(items, self.padding_side)

    def hidden_states(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def forward(self, input_ids, attention_mask, position_ids, pool_mask) -> torch.Tensor:
        """A tokenised batch -> [B, D] float32 pooled embeddings (not normalised), with grad."""
        with self.autocast():
            hidden = self.hidden_states(input_ids, attention_mask, position_ids)
        pooled = pool(hidden, pool_mask, attention_mask, self.settings.pooling)
        return pooled if self.adaptor is None else self.adaptor(pooled)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def encode(self, captions: list[str], batch_size: int = 32, show_progress: bool = False) -> TextEmbeddings:
        """Captions -> [N, D] float32 L2-normalised embeddings on CPU, in input order, with
        `.truncated`: how many of them were cut to `max_tokens`.

        Captions are batched by token length (little padding); results do not depend on
        the batching.
        """
        if isinstance(captions, str):
            raise TypeError("encode takes a list of captions, not a single string")
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption {i} is empty or not a string: {caption!r}")
        items = [self._tokenize(c) for c in captions]
        truncated = sum(item.truncated for item in items)
        batches = plan_length_batches([len(item.input_ids) for item in items], batch_size)
        out = torch.empty((len(items), self.dim), dtype=torch.float32)
        was_training = self.training
        self.eval()
        try:
            for rows in tqdm(batches, desc="encode", unit="batch", disable=not show_progress):
                batch = {k: v.to(self.device) for k, v in self.collate([items[i] for i in rows]).items()}
                out[rows] = F.normalize(self(**batch).float(), dim=-1).cpu()
        finally:
            self.train(was_training)
        if truncated:
            log.warning("%d of %d captions were longer than max_length=%d tokens and were truncated",
                        truncated, len(captions), self.settings.max_length)
        return TextEmbeddings.of(out, truncated)

    # ---------------------------------------------------------------- saving
    def save_pretrained(self, directory: str | os.PathLike, merge: bool = False) -> None:
        """Save as a LoRA adapter (default when LoRA is on) or, with merge=True or no LoRA,
        as a full HF model folder that plain `AutoModel.from_pretrained` also loads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.has_lora and not merge:
            self.model.save_pretrained(directory)
            fmt = "adapter"
        elif self.llm_frozen_base and not merge:
            fmt = "base"  # the LLM is settings.base_model unchanged
        else:
            model = copy.deepcopy(self.model).merge_and_unload() if self.has_lora else self.model
            model.save_pretrained(directory)
            fmt = "full"
        if self.adaptor is not None:
            save_adaptor(self.adaptor, directory)
        self.tokenizer.save_pretrained(directory)
        atomic_write_text(directory / SETTINGS_FILE, settings_file_text(fmt, self.settings.to_dict()))

    def identity(self) -> dict[str, Any]:
        return self.settings.identity()

    def weights_fingerprint(self) -> str:
        """sha256 hex digest of the weights that make this encoder differ from its base
        model, plus `identity()`: with LoRA, the adapter tensors exactly as peft saves them
        (cheap); a frozen base LLM, none; else every tensor of the transformer (one pass
        over the weights). An adaptor's tensors are added under their saved names.

        Two stage-1 runs from the same base therefore get different fingerprints, and a
        saved folder's fingerprint can be computed from its files without loading the LLM
        (`text/identity.py: expected_identity_of_folder`).
        """
        if self.has_lora:
            from peft import get_peft_model_state_dict

            tensors = get_peft_model_state_dict(self.model)  # the names adapter_model.safetensors uses
        elif self.llm_frozen_base:
            tensors = {}  # a "base"-format save holds no LLM weights
        else:
            tensors = self.base_model.state_dict()  # the names a full save uses
        if self.adaptor is not None:
            tensors = {**tensors, **adaptor_tensors(self.adaptor)}
        return fingerprint_tensors(self.identity(), tensors)


# -------------------------------------------------------------------- helpers
def _as_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def _load_llm(source: str, with_lm_head: bool, kwargs: dict) -> tuple[nn.Module, nn.Module | None]:
    """Load the transformer body (and its LM head when MNTP needs it)."""
    from transformers import AutoModel, AutoModelForCausalLM

    require_safetensors(source)
    try:
        if with_lm_head:
            causal = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            # Frozen: MNTP only reads predictions through it. Only the body trains (its LoRA,
            # or all of it), and only the body is saved, so a trained head would be lost -
            # and as trainable weights it would fill every checkpoint (0.5 B for Llama-3-8B).
            return causal.get_decoder(), causal.get_output_embeddings().requires_grad_(False)
        return AutoModel.from_pretrained(source, **kwargs), None
    except OSError as err:
        raise ValueError(f"cannot load a language model from {source!r}: {err}") from None


def _adaptor_for(settings: EncoderSettings, saved, model: nn.Module) -> nn.Module | None:
    """The adaptor the settings name: new, or filled from the saved folder that holds it."""
    if settings.adaptor is None:
        return None
    adaptor = build_encoder_adaptor(settings.adaptor, int(model.config.hidden_size))
    if saved is not None and saved.settings.get("adaptor") is not None:
        load_adaptor(adaptor, saved.folder)
    return adaptor


def _load_tokenizer(source: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(f"cannot load a tokenizer from {source!r}: {err}") from None


def _add_lora(model: nn.Module, lora: LoraSettings) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in lora.target_modules if t in present]
    if not targets:
        raise ValueError(f"none of the LoRA target modules {lora.target_modules} exist in this model")
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none")
    with _quiet_peft():
        return get_peft_model(model, config)


@contextmanager
def _quiet_peft():
    """peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning
    users can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
