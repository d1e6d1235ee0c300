"""Random-initialised LLMs of any size, with a small local tokenizer.

Tests use tiny ones (hidden 32-64); benchmarks use larger synthetic configs where the
LLM dominates the cost, as in the paper. Nothing is downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

# Sentences the tokenizer learns its merges from: enough English to split captions into
# word pieces rather than single characters.
_TRAINING_TEXT = [
    "a photo of a cat sitting on a red sofa next to a window",
    "two dogs run across a green field under a blue sky",
    "a man riding a bicycle down a busy city street at night",
    "a plate of food with rice, vegetables and a glass of water",
    "an apple, a banana and an orange on a wooden table",
    "the sun sets behind the mountains while birds fly over the lake",
    "a small child holds a yellow umbrella in the rain",
    "left right top bottom middle corner large small big tiny",
    "one two three four five six seven eight nine ten",
]

ARCHITECTURES = ("llama", "qwen2")


def build_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer with BOS/EOS/pad/mask tokens, trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>", "<mask>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    bos = core.token_to_id("<s>")
    # like Llama-3: BOS in front, no EOS (the caption encoder appends EOS itself)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", mask_token="<mask>")


def build_random_llm(arch: str = "llama", hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4,
                     num_kv_heads: int = 2, intermediate_size: int | None = None, vocab_size: int = 512,
                     seed: int = 0, tie_word_embeddings: bool = True):
    """A random causal LM of the given architecture and size. `tie_word_embeddings=False`
    gives it a separate LM head, as Llama-3-8B has (SmolLM2 ties its head to the embeddings)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if arch not in configs:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {arch!r}")
    config = configs[arch](
        hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size or 2 * hidden_size,
        vocab_size=vocab_size, max_position_embeddings=2048, tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_random_llm(directory: str | os.PathLike, arch: str = "llama", **size) -> Path:
    """Write a random LLM and its tokenizer as an ordinary HF folder; returns the folder."""
    directory = Path(directory)
    tokenizer = build_tokenizer(size.get("vocab_size", 512))
    build_random_llm(arch, **size).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
