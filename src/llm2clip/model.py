"""LLM2CLIP: a CLIP vision tower + adaptor over a frozen LLM caption encoder.

    image  -> vision tower -> projection (re-initialised, width -> embed_dim) -> L2 norm
    text   -> caption encoder (stage-1 LLM, frozen) -> adaptor (-> embed_dim)  -> L2 norm
    logits =  exp(logit_scale) * image @ text.T  (+ logit_bias for the sigmoid loss)

That is Table 10's method (a), one loss term `llm`. With `loss_terms` [llm, clip_text,
cat] the model is method (d): a concat caption encoder's [LLM ‖ CLIP-T] embedding gets a
head per encoder and one on their concatenation (multi_encoder.py); `encode_image` and
`encode_text` then use the `inference_term`'s spaces (default: the concatenation head).

A saved folder holds `llm2clip.json` (the config), `model.safetensors` (projection,
adaptor, logit scale/bias), `vision/` (the tuned tower in its own HF format, loadable
by LLaVA-style consumers as it is) and, when the model has one, `caption_encoder/` (a
stage-1 folder) — so `from_pretrained(dir)` alone gives a working retrieval model.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from .adaptor import build_adaptor
from .atomic_file import atomic_write_bytes, atomic_write_text
from .multi_encoder import (IMAGE_SPACES, TERMS, MultiEncoderHeads, check_terms, default_inference_term,
                            is_image_text, needs_clip_text)
from .text_embeddings import TextEmbeddings
from .vision import load_vision_tower

CONFIG_FILE = "llm2clip.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class LLM2CLIPConfig:
    vision: str  # tower name/id/folder it was built from (informational once saved)
    text_dim: int  # caption-embedding width (LLM hidden size, + CLIP text width for method d)
    embed_dim: int = 1280
    adaptor: dict[str, Any] = field(default_factory=lambda: {"kind": "mlp", "num_blocks": 4, "expansion": 2})
    logit_scale_init: float = 1 / 0.07
    logit_bias_init: float | None = None  # set (e.g. -10) to train with the sigmoid loss
    max_logit_scale: float = 100.0
    caption_encoder: str | None = None  # where the text side came from (informational)
    # Table 10's method: ["llm"] = (a), the adaptor over the whole caption embedding (with a
    # concat encoder: the "concat, single head" variant); ["llm", "clip_text", "cat"] = (d).
    loss_terms: list[str] = field(default_factory=lambda: ["llm"])
    clip_text_dim: int = 0  # with more terms than llm: the CLIP-T part's width, the embedding's last columns
    cat_dim: int | None = None  # the concatenation head's width (default 2 x embed_dim, Appendix A)
    inference_term: str | None = None  # whose spaces encode_image/encode_text use (default: cat if trained, else llm)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LLM2CLIPConfig":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown LLM2CLIP config key(s) {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def check(self) -> None:
        check_terms(self.loss_terms)
        if self.clip_text_dim and not needs_clip_text(self.loss_terms):
            raise ValueError(f"clip_text_dim={self.clip_text_dim} is for multi-encoder loss terms, "
                             f"not {self.loss_terms}")
        if self.inference_term is not None and self.inference_term not in self.loss_terms:
            raise ValueError(f"inference_term {self.inference_term!r} is not one of the trained terms "
                             f"{self.loss_terms}")
        if self.inference_term is not None and not is_image_text(self.inference_term):
            raise ValueError(f"inference_term {self.inference_term!r} contrasts two text spaces and cannot encode "
                             "images: pick an image-text term")


class LLM2CLIP(nn.Module):
    def __init__(self, config: LLM2CLIPConfig, vision_tower: nn.Module | None = None, caption_encoder=None):
        super().__init__()
        config.check()
        self.config = config
        self.inference_term = config.inference_term or default_inference_term(config.loss_terms)
        self.vision = vision_tower if vision_tower is not None else load_vision_tower(config.vision)
        self.projection = nn.Linear(self.vision.width, config.embed_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=self.vision.width ** -0.5)
        adaptor = dict(config.adaptor)
        llm_dim = config.text_dim - config.clip_text_dim
        self.adaptor = build_adaptor(adaptor.pop("kind", "mlp"), llm_dim, config.embed_dim, **adaptor)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(config.logit_scale_init)))
        bias = config.logit_bias_init
        self.logit_bias = nn.Parameter(torch.tensor(float(bias))) if bias is not None else None
        self.multi = None
        if needs_clip_text(config.loss_terms):
            self.multi = MultiEncoderHeads(config.loss_terms, self.vision.width, config.clip_text_dim,
                                           config.embed_dim, config.cat_dim or 2 * config.embed_dim,
                                           config.logit_scale_init, bias)
        self.set_caption_encoder(caption_encoder)

    @property
    def caption_encoder(self):
        return self.__dict__["_caption_encoder"][0]

    def set_caption_encoder(self, encoder) -> None:
        """Attach the (frozen) caption encoder. Kept out of the module tree on purpose:
        its weights are not LLM2CLIP's to save, train or move (it has its own folder)."""
        self.__dict__["_caption_encoder"] = [encoder]

    # ----------------------------------------------------------------- encoding
    def encode_image(self, images, term: str | None = None) -> torch.Tensor:
        """A list of PIL images (preprocessed by the tower's own processor) or a pixel tensor,
        in the image space of `term` (default: the inference term)."""
        pixels = images if torch.is_tensor(images) else self.vision.preprocess(list(images))
        return self.project_image_features(self.vision(pixels.to(self.projection.weight.device)), term)

    def project_image_features(self, features: torch.Tensor, term: str | None = None) -> torch.Tensor:
        """The tower's pooled features [N, width] (cached features of a frozen tower) in the
        image space of `term`."""
        return self.image_space(features, TERMS[self._term(term)][0])

    def encode_text_embeddings(self, embeddings: torch.Tensor, term: str | None = None) -> torch.Tensor:
        """Precomputed caption-encoder embeddings [N, text_dim] in the text space of `term`
        (for method (a): the adaptor)."""
        space = TERMS[self._term(term)][1]
        return self.text_spaces(embeddings, [space])[space]

    def encode_text(self, texts: list[str], batch_size: int = 32, term: str | None = None) -> TextEmbeddings:
        """Texts through the caption encoder and the `term`'s text head; `.truncated`: how
        many the caption encoder cut to `max_text_tokens`."""
        if self.caption_encoder is None:
            raise ValueError("this model has no caption encoder: load one, or use encode_text_embeddings")
        encoded = self.caption_encoder.encode(list(texts), batch_size=batch_size)
        return TextEmbeddings.of(self.encode_text_embeddings(encoded.embeddings, term), encoded.truncated)

    @property
    def max_text_tokens(self) -> int | None:
        """The caption encoder's input limit (None without a caption encoder)."""
        return None if self.caption_encoder is None else self.caption_encoder.max_tokens

    def _term(self, term: str | None) -> str:
        term = term or self.inference_term
        if term not in self.config.loss_terms:
            raise ValueError(f"term {term!r} was not trained; this model's terms are {self.config.loss_terms}")
        if not is_image_text(term):
            raise ValueError(f"term {term!r} contrasts two text spaces: encode with an image-text term "
                             f"({[t for t in self.config.loss_terms if is_image_text(t)]})")
        return term

    # ----------------------------------------------------------------- the spaces
    def image_space(self, pooled: torch.Tensor, space: str = "image") -> torch.Tensor:
        """Pooled tower features [N, width] -> the named image space, L2-normalised."""
        weight = self.projection.weight
        head = self.projection if space == "image" else self.multi.cat_image
        return F.normalize(head(pooled.to(weight.device, weight.dtype)), dim=-1)

    def text_spaces(self, embeddings: torch.Tensor, spaces) -> dict[str, torch.Tensor]:
        """Caption-encoder embeddings [N, text_dim] -> the named text spaces, each L2-normalised
        (each computed once: `cat` reads the `llm` and `clip_text` spaces)."""
        if embeddings.shape[-1] != self.config.text_dim:
            raise ValueError(f"text embeddings have dimension {embeddings.shape[-1]}, "
                             f"this model expects {self.config.text_dim}")
        weight = self.projection.weight
        embeddings = embeddings.to(weight.device, weight.dtype)
        llm_part = embeddings[..., :self.config.text_dim - self.config.clip_text_dim]
        out = {"llm": F.normalize(self.adaptor(llm_part), dim=-1)}
        if {"clip_text", "cat"} & set(spaces):
            clip_part = embeddings[..., self.config.text_dim - self.config.clip_text_dim:]
            out["clip_text"] = F.normalize(self.multi.clip_text(clip_part), dim=-1)
        if "cat" in spaces:
            out["cat"] = F.normalize(self.multi.cat_text(torch.cat([out["llm"], out["clip_text"]], dim=-1)), dim=-1)
        return {space: out[space] for space in spaces}

    def term_pairs(self, pooled: torch.Tensor,
                   embeddings: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{term: (its first space's rows, its second space's rows)} for every trained term,
        each space computed once: what the stage-2 loss contrasts."""
        pairs = {term: TERMS[term] for term in self.config.loss_terms}
        needed = {space for pair in pairs.values() for space in pair}
        spaces = self.text_spaces(embeddings, sorted(needed - set(IMAGE_SPACES)))
        spaces.update({space: self.image_space(pooled, space) for space in sorted(needed & set(IMAGE_SPACES))})
        return {term: (spaces[first], spaces[second]) for term, (first, second) in pairs.items()}

    def scale(self, term: str = "llm") -> torch.Tensor:
        """exp(logit_scale) of a term, clamped to max_logit_scale (CLIP's 100)."""
        raw = self.logit_scale if term == "llm" else self.multi.logit_scales[term]
        return raw.exp().clamp(max=self.config.max_logit_scale)

    def bias(self, term: str = "llm") -> torch.Tensor | None:
        """A term's logit bias (sigmoid loss), else None."""
        if term == "llm" or self.logit_bias is None:
            return self.logit_bias
        return self.multi.logit_biases[term]

    def logit_parameters(self) -> list[nn.Parameter]:
        """Every logit scale and bias (trained with their own lr, without weight decay)."""
        params = [self.logit_scale] + ([self.logit_bias] if self.logit_bias is not None else [])
        if self.multi is not None:
            params += list(self.multi.logit_scales.values())
            params += list(self.multi.logit_biases.values()) if self.multi.logit_biases is not None else []
        return params

    def clamp_logit_scale(self) -> None:
        """Keep the stored parameters in range too, so the optimiser cannot run them away."""
        scales = [self.logit_scale] + (list(self.multi.logit_scales.values()) if self.multi is not None else [])
        with torch.no_grad():
            for scale in scales:
                scale.clamp_(max=math.log(self.config.max_logit_scale))

    # ----------------------------------------------------------------- saving
    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything but the tower: projection, adaptor, logit scale/bias (and the
        multi-encoder heads)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("vision.")}

    def save_pretrained(self, directory: str | os.PathLike, save_caption_encoder: bool = True) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.vision.save_pretrained(directory / "vision")
        state = {k: v.detach().contiguous().cpu() for k, v in self.head_state().items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, save(state))
        if save_caption_encoder and self.caption_encoder is not None:
            self.caption_encoder.save_pretrained(directory / "caption_encoder")
        atomic_write_text(directory / CONFIG_FILE, json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, load_caption_encoder: bool = True,
                        device: str | torch.device | None = None) -> "LLM2CLIP":
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{directory}: not an LLM2CLIP folder (no {CONFIG_FILE})")
        config = LLM2CLIPConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
        encoder = None
        if load_caption_encoder and (directory / "caption_encoder").is_dir():
            from .text import load_caption_encoder

            encoder = load_caption_encoder(directory / "caption_encoder", device=device)
            encoder.requires_grad_(False).eval()
        model = cls(config, load_vision_tower(directory / "vision"), encoder)
        state = load_file(str(directory / WEIGHTS_FILE))
        expected = set(model.head_state())
        if set(state) != expected:
            raise ValueError(f"{directory / WEIGHTS_FILE}: tensors {sorted(set(state) ^ expected)[:5]} "
                             "do not match the config")
        model.load_state_dict(state, strict=False)
        return model.to(device) if device is not None else model

    def export_vision_tower(self, directory: str | os.PathLike) -> None:
        """The tuned tower alone, in its own format (an HF vision-model folder for CLIP/SigLIP)."""
        self.vision.save_pretrained(directory)

