"""Benchmark dataset readers: each turns one public benchmark's real file layout into a
benchmark. (The performance scripts are the repository's `benchmarks/`.)

Retrieval (`RetrievalBenchmark`: image paths, texts, text -> image index):
    karpathy    Flickr30k / COCO Karpathy test JSON (multi-caption)
    sharegpt4v  ShareGPT4V-1k, the first 1000 items of the share-captioner file (1:1)
    urban1k     Urban1k folder: image/{i}.jpg + caption/{i}.txt (1:1)
    docci       DOCCI docci_descriptions.jsonlines, split == "test" (1:1)
    xm3600      Crossmodal-3600 captions.jsonl, one language at a time
    jsonl, csv  any file with an image field and caption field(s)
Classification (`ClassificationBenchmark`): ImageNet-style class folders.

Every reader raises `llm2clip.errors.DataError` naming the file (and row/key) for a
wrong format, missing images (unless skip_missing), or an empty benchmark.
"""
from __future__ import annotations

from .classification import (ClassificationBenchmark, imagenet_wnid_class_names, load_clip_templates,
                             load_imagenet_class_names, read_class_folder)
from .docci import read_docci
from .generic import read_csv, read_jsonl
from .karpathy import read_karpathy
from .retrieval_benchmark import RetrievalBenchmark
from .sharegpt4v import SHAREGPT4V_FIRST, read_sharegpt4v
from .urban1k import read_urban1k
from .xm3600 import read_xm3600, xm3600_languages

# kind -> reader: the one list of retrieval benchmark kinds (the eval config accepts its keys)
RETRIEVAL_READERS = {
    "karpathy": read_karpathy,
    "sharegpt4v": read_sharegpt4v,
    "urban1k": read_urban1k,
    "docci": read_docci,
    "xm3600": read_xm3600,
    "jsonl": read_jsonl,
    "csv": read_csv,
}


def load_retrieval_benchmark(kind: str, path, **kwargs) -> RetrievalBenchmark:
    """`RETRIEVAL_READERS[kind](path, **kwargs)`: image_root, skip_missing, limit, and the
    reader's own options (xm3600: language; jsonl/csv: fields, image_field)."""
    try:
        reader = RETRIEVAL_READERS[kind]
    except KeyError:
        raise ValueError(f"unknown retrieval benchmark kind {kind!r}; one of {sorted(RETRIEVAL_READERS)}") from None
    return reader(path, **kwargs)


__all__ = [
    "RetrievalBenchmark", "ClassificationBenchmark", "RETRIEVAL_READERS", "SHAREGPT4V_FIRST",
    "load_retrieval_benchmark", "read_karpathy", "read_sharegpt4v", "read_urban1k", "read_docci",
    "read_xm3600", "xm3600_languages", "read_jsonl", "read_csv", "read_class_folder",
    "load_imagenet_class_names", "load_clip_templates", "imagenet_wnid_class_names",
]
