"""Benchmark `llm2clip embed`: length-grouped vs input-order batching, and store reads.

    HF_HUB_OFFLINE=1 python benchmarks/bench_embed.py [--captions 512] [--hidden 256]

A random LLM (nothing downloads) embeds a caption set that mixes short captions (raw
alt-text) with long ones (dense MLLM captions), as DreamLIP-style data does. Prints the
padding fraction and captions/s of both batching orders, the store's size per dtype, and
random-access read throughput.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from llm2clip.data.records import CaptionRecord
from llm2clip.embeddings import EmbeddingStore, padding_fraction, plan_length_batches, write_embedding_store
from llm2clip.text import caption_encoder as encoder_mod
from llm2clip.text import CaptionEncoder
from llm2clip.text.random_llm import save_random_llm

WORDS = ("a photo of the cat sitting on red sofa next to window two dogs run across green field under blue "
         "sky man riding bicycle down busy city street at night").split()


def make_records(n: int, seed: int = 0) -> list[CaptionRecord]:
    """Per sample a short caption (4-12 words) and a long one (60-120 words)."""
    rng = random.Random(seed)
    records = []
    for i in range(n // 2):
        short = " ".join(rng.choices(WORDS, k=rng.randint(4, 12)))
        long = " ".join(rng.choices(WORDS, k=rng.randint(60, 120)))
        records.append(CaptionRecord(id=str(i), captions=[short, long], sources=["raw_caption", "longSV"]))
    return records


def time_write(encoder, records, out: Path, grouped: bool, batch_size: int, dtype: str = "fp16") -> float:
    original = encoder_mod.plan_length_batches
    if not grouped:  # input order: consecutive chunks, as a naive loop would batch
        encoder_mod.plan_length_batches = lambda lengths, b: [list(range(s, min(s + b, len(lengths))))
                                                             for s in range(0, len(lengths), b)]
    try:
        began = time.perf_counter()
        write_embedding_store(encoder, records, out, dtype=dtype, shard_size=4096, batch_size=batch_size)
        return time.perf_counter() - began
    finally:
        encoder_mod.plan_length_batches = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    model = save_random_llm(root / "llm", "llama", hidden_size=args.hidden, num_layers=args.layers,
                            num_heads=max(1, args.hidden // 64), num_kv_heads=max(1, args.hidden // 128))
    encoder = CaptionEncoder.from_pretrained(str(model), precision="fp32")
    records = make_records(args.captions)
    texts = [c for r in records for c in r.captions]
    lengths = [len(encoder.tokenize_one(t).input_ids) for t in texts]
    in_order = [list(range(s, min(s + args.batch_size, len(texts)))) for s in range(0, len(texts), args.batch_size)]
    grouped = plan_length_batches(lengths, args.batch_size)
    result = {
        "captions": len(texts), "hidden": args.hidden, "layers": args.layers, "batch_size": args.batch_size,
        "padding_fraction_input_order": round(padding_fraction(lengths, in_order), 3),
        "padding_fraction_length_grouped": round(padding_fraction(lengths, grouped), 3),
    }
    for name, grouped in (("input_order", False), ("length_grouped", True)):
        seconds = time_write(encoder, records, root / name, grouped, args.batch_size)
        result[f"captions_per_s_{name}"] = round(len(texts) / seconds, 1)
    for dtype in ("fp32", "fp16", "int8"):
        out = root / "length_grouped" if dtype == "fp16" else root / dtype
        if dtype != "fp16":
            write_embedding_store(encoder, records, out, dtype=dtype, batch_size=args.batch_size)
        result[f"bytes_per_caption_{dtype}"] = round(sum(p.stat().st_size for p in out.glob("shard-*")) / len(texts), 1)
    store = EmbeddingStore.open(root / "length_grouped")
    keys = store.keys()
    picks = [keys[i] for i in np.random.default_rng(0).integers(0, len(keys), 20_000)]
    began = time.perf_counter()
    for start in range(0, len(picks), 256):  # batches of random samples, as a stage-2 loader reads them
        chunk = picks[start:start + 256]
        store.get_many([k[0] for k in chunk], [k[1] for k in chunk])
    result["random_reads_per_s"] = round(len(picks) / (time.perf_counter() - began))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
