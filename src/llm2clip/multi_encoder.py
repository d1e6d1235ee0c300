"""Table 10's multi-encoder methods: a head per text encoder, one contrastive term each.

The caption embedding is a concat encoder's [LLM ‖ CLIP-T] (text/concat_encoder.py; the
same vector whether it comes from the store or from the encoders in the loop). The last
`clip_text_dim` columns are the original CLIP text embedding, the rest the LLM's. Each
loss term contrasts a text space with an image space (Appendix A, "Details of multi
encoder": a one-layer projector per encoder into one space, and for the concatenation a
head of twice that width after the concatenated text embeddings and another after CLIP-V):

    term        image space                          text space
    llm         image     = projection(tower)        llm       = adaptor(LLM part)
    clip_text   image     (one projector for CLIP-V) clip_text = Linear(CLIP-T part)
    cat         cat_image = Linear(tower)            cat       = Linear([llm ‖ clip_text])
    clip_text_llm  clip_text (text, not image)       llm       (Table 10's (c))

Method (d) trains the three terms, loss = CL(LLM,V) + CL(CLIP-T,V) + CL(Cat,V); at
inference the paper's best (d) row encodes with the concatenation head, so `cat` is the
default inference term when it is trained. The `cat` head reads the two projected
spaces (each L2-normalised, so neither dominates), which is how its width comes out at
twice the projectors': our reading of "a 2048-dimensional head placed after the
concatenation", next to 1024-wide projectors.

Each term has its own logit scale (and bias, for the sigmoid loss): the spaces differ in
width and the paper names no shared temperature. The `llm` term uses the model's own
projection, adaptor and logit scale, so method (a) is the special case of one term.
Table 10's (b) is the terms [llm, clip_text]; (c) adds `clip_text_llm`, a text-text term
that contrasts a caption's CLIP-T space with its LLM space (CL(CLIP-T, LLM): the two text
heads are pulled together, the other captions of the batch are the negatives). A
text-text term trains but never encodes: images and texts are encoded with an
image-text term.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# term -> (first space, second space): its loss contrasts row i of one with row i of the
# other. For the image-text terms the first is the image space; Table 10's (c) term pairs
# two text spaces.
TERMS: dict[str, tuple[str, str]] = {
    "llm": ("image", "llm"),
    "clip_text": ("image", "clip_text"),
    "cat": ("cat_image", "cat"),
    "clip_text_llm": ("clip_text", "llm"),
}
IMAGE_SPACES = ("image", "cat_image")  # computed from the tower's pooled features; the rest from the caption
METHOD_C = ["llm", "clip_text", "clip_text_llm"]
METHOD_D = ["llm", "clip_text", "cat"]


def is_image_text(term: str) -> bool:
    """Whether a term contrasts an image space with a text space (and so can encode)."""
    return TERMS[term][0] in IMAGE_SPACES


def check_terms(terms: list[str], where: str = "loss_terms") -> None:
    unknown = [t for t in terms if t not in TERMS]
    if unknown or not terms:
        raise ValueError(f"{where} {list(terms)}: each must be one of {list(TERMS)}")
    if "llm" not in terms:
        raise ValueError(f"{where} {list(terms)} must include 'llm' (the LLM's own term)")
    if len(set(terms)) != len(terms):
        raise ValueError(f"{where} {list(terms)}: a term is listed twice")


def needs_clip_text(terms: list[str]) -> bool:
    """Whether the terms read the CLIP-T part of a concat encoder's embedding."""
    return any(term != "llm" for term in terms)


def default_inference_term(terms: list[str]) -> str:
    return "cat" if "cat" in terms else "llm"


class MultiEncoderHeads(nn.Module):
    """The heads and logit scales of every term other than `llm` (see the module docstring)."""

    def __init__(self, terms: list[str], vision_width: int, clip_text_dim: int, embed_dim: int, cat_dim: int,
                 logit_scale_init: float, logit_bias_init: float | None):
        super().__init__()
        check_terms(terms)
        if clip_text_dim < 1:
            raise ValueError(f"loss terms {terms} need the CLIP-T part of a concat caption encoder's embedding")
        self.terms = [t for t in terms if t != "llm"]
        self.clip_text = nn.Linear(clip_text_dim, embed_dim, bias=False)
        if "cat" in terms:
            self.cat_text = nn.Linear(2 * embed_dim, cat_dim, bias=False)
            self.cat_image = nn.Linear(vision_width, cat_dim, bias=False)
        for layer in self.children():
            nn.init.normal_(layer.weight, std=layer.in_features ** -0.5)
        self.logit_scales = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(math.log(logit_scale_init))) for t in self.terms})
        self.logit_biases = None if logit_bias_init is None else nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(float(logit_bias_init))) for t in self.terms})
