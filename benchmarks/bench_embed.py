"""`llm2clip embed`: tokens/s of the store writer against a naive loop and against the
model's own limit, and its peak memory as the caption count grows 10×.

    python benchmarks/bench_embed.py                    # SmolLM2-135M, 24 demo scenes (120 captions)
    python benchmarks/bench_embed.py --quick            # a tiny random LLM
    python benchmarks/bench_embed.py --llm random:576x30 --scenes 48 --rss-scenes 8 80

Captions: every caption field of the demo's emoji scenes (short, short_alt, spatial,
long, dense): a realistic mix of alt-text-like captions (~10 tokens) and dense MLLM
captions (~200 tokens), as DreamLIP-style data has.

Variants, interleaved A,B,C,A,B,C in one process (medians; tokens = real tokens):
  store   `write_embedding_store` (tokenise, length-grouped batches, forward, quantise to
          fp16, write shards) into a fresh folder each time;
  naive   tokenise, batches in input order padded to their longest caption, forward;
  limit   forward only, on captions batched by exact token length (zero padding),
          tokenised beforehand: what the model costs on these tokens.
Memory: `write_embedding_store` in a fresh subprocess for N and 10·N scenes (small
shards, so 10·N writes 10× the shards); peak RSS - RSS after imports.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import bench_common as bc
import torch

FIELDS = ("short", "short_alt", "spatial", "long", "dense")


def records_of(n_scenes: int) -> list:
    from llm2clip.demo.scenes import caption_records, make_scenes

    return caption_records(make_scenes(n_scenes), fields=FIELDS)


def load(llm: str, device: torch.device):
    from llm2clip.text import CaptionEncoder

    return CaptionEncoder.from_pretrained(llm, precision="fp32", device=device)


@torch.no_grad()
def forward_batches(encoder, items, batches) -> None:
    for rows in batches:
        batch = {k: v.to(encoder.device) for k, v in encoder.collate([items[i] for i in rows]).items()}
        torch.nn.functional.normalize(encoder(**batch).float(), dim=-1).cpu()


def exact_length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        groups[n].append(i)
    return [rows[s:s + batch_size] for rows in groups.values() for s in range(0, len(rows), batch_size)]


def child(spec: dict) -> None:
    from llm2clip.embeddings import write_embedding_store

    device = bc.pick_device(spec["device"])
    memory = bc.PeakMemory(device)
    encoder = load(spec["llm"], device)
    records = records_of(spec["scenes"])
    out = Path(tempfile.mkdtemp(prefix="bench-embed-rss-"))
    try:
        write_embedding_store(encoder, records, out, shard_size=spec["shard_size"], batch_size=spec["batch_size"])
        shards = len(list(out.glob("shard-*.safetensors")))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    bc.report_child({"scenes": spec["scenes"], "captions": len(records) * len(FIELDS), "shards": shards,
                     "peak_bytes": memory.peak()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="smollm2-135m", help="embedded name, folder, or random:HIDDENxLAYERS")
    parser.add_argument("--scenes", type=int, default=24, help="demo scenes (5 captions each) for the speed runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-scenes", type=int, nargs=2, default=[8, 80], metavar=("N", "TEN_N"))
    parser.add_argument("--shard-size", type=int, default=20, help="captions per shard in the memory runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    root = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    if args.quick:
        args.llm, args.scenes, args.repeats, args.rss_scenes = "random:64x2", 6, 1, [2, 20]
    llm = bc.tiny_or_named_llm(args.llm, root)
    device = bc.pick_device(args.device)
    from llm2clip.embeddings import padding_fraction, plan_length_batches, write_embedding_store

    encoder = load(llm, device)
    records = records_of(args.scenes)
    texts = [c for r in records for c in r.captions]
    items = [encoder.tokenize_one(t) for t in texts]
    lengths = [len(item.input_ids) for item in items]
    tokens = sum(lengths)
    in_order = [list(range(s, min(s + args.batch_size, len(texts)))) for s in range(0, len(texts), args.batch_size)]
    exact = exact_length_batches(lengths, args.batch_size)
    counter = iter(range(10 ** 9))

    def store():
        write_embedding_store(encoder, records, root / f"store-{next(counter)}", batch_size=args.batch_size)

    def naive():
        fresh = [encoder.tokenize_one(t) for t in texts]
        forward_batches(encoder, fresh, in_order)

    def limit():
        forward_batches(encoder, items, exact)

    times = bc.interleaved({"store": store, "naive": naive, "limit": limit}, args.repeats, device)
    seconds = {k: bc.median(v) for k, v in times.items()}
    rate = {k: tokens / s for k, s in seconds.items()}
    memory = [bc.run_child(__file__, {"llm": llm, "scenes": n, "device": args.device, "shard_size": args.shard_size,
                                      "batch_size": args.batch_size}) for n in args.rss_scenes]
    growth = memory[1]["peak_bytes"] / memory[0]["peak_bytes"]
    result = {
        "llm": args.llm, "captions": len(texts), "tokens": tokens, "batch_size": args.batch_size,
        "padding_fraction": {"store": padding_fraction(lengths, plan_length_batches(lengths, args.batch_size)),
                             "naive": padding_fraction(lengths, in_order), "limit": 0.0},
        "seconds": times, "tokens_per_s": rate, "memory": memory, "rss_growth_10x": growth,
    }
    pad = result["padding_fraction"]
    table = bc.markdown_table(
        ["variant", "tokens/s", "padding", "store speed-up", "target", "met?"],
        [["store (`write_embedding_store`)", f"{rate['store']:.0f}", f"{pad['store']:.0%}", "1", "", ""],
         ["naive (input order)", f"{rate['naive']:.0f}", f"{pad['naive']:.0%}",
          f"{rate['store'] / rate['naive']:.2f}×", "≥ 2×", rate["store"] / rate["naive"] >= 2],
         ["limit (forward, zero padding)", f"{rate['limit']:.0f}", "0%",
          f"{rate['store'] / rate['limit']:.2f}× (limit/store time {seconds['store'] / seconds['limit']:.2f})",
          "store time ≤ 1.2 × limit", seconds["store"] <= 1.2 * seconds["limit"]]])
    table += (f"\n\n{args.llm}: {len(texts)} captions ({tokens} tokens, {min(lengths)}-{max(lengths)} per caption), "
              f"batch {args.batch_size}, medians of {args.repeats} interleaved runs.\n\n")
    table += bc.markdown_table(
        ["scenes", "captions", "shards", "peak RSS delta GiB"],
        [[m["scenes"], m["captions"], m["shards"], f"{m['peak_bytes'] / bc.GIB:.3f}"] for m in memory])
    table += f"\n\npeak memory at 10× the captions = {growth:.3f} × (target 0.9-1.1: {0.9 <= growth <= 1.1})"
    shutil.rmtree(root, ignore_errors=True)
    bc.write_result("embed", result, table, args.out_dir)


if __name__ == "__main__":
    main()
