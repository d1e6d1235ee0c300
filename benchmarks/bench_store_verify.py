"""What checking a store against its data costs before stage 2 (embeddings/alignment.py).

    python benchmarks/bench_store_verify.py                  # 1 M captions; 100k shard samples of 16 KB images
    python benchmarks/bench_store_verify.py --quick
    python benchmarks/bench_store_verify.py --samples 2000000 --shard-samples 200000 --image-kb 32

Records: `--samples` caption records, each a real caption (~12 words) and a dense one
(~90 words, DreamLIP-like lengths), all stored; timed is the check stage 2 runs on
CSV/JSONL data (`verify_alignment` over the records: hash every caption, look its row
up, compare with the memory-mapped text hashes in chunks), next to sha256 of the same
captions alone (the floor: the check cannot be cheaper than hashing). The store's
embeddings are irrelevant to the check, so the writer is handed zero vectors (the
encoder's `encode` is replaced) and a one-layer random LLM only gives it an identity.

Shards: `--shard-samples` samples as webdataset shards (txt + json + a random
`--image-kb` KB jpg per sample, 1000 per shard) on local disk, checked as stage 2 does
(`shard_captions`: only the caption members are read, tarfile seeks over the images),
next to reading the same shards in full (`iter_shard`, what the training stream reads).
Right after writing the shards are in the page cache, so both read from memory: the gap
is reading the image bytes, not the disk.

Variants are interleaved and repeated; medians. Figures are per million captions (the
records' time scales with the caption count; the shards' with samples, 2 captions each).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import bench_common as bc
import numpy as np
import torch

WORDS = ("a photo of the cat dog man woman child street city tree sky cloud red blue green small large old young "
         "sitting standing running near next to under over with and in on at left right front back building car "
         "window table chair water beach mountain field grass road bridge light shadow bright dark wooden metal").split()
PER_SHARD = 1000


def make_records(n: int, seed: int = 0):
    """n records, each a ~12-word real caption and a ~90-word dense one, all distinct."""
    from llm2clip.data.records import CaptionRecord

    rng = np.random.default_rng(seed)
    vocabulary = np.array(WORDS)
    records = []
    for i in range(n):
        real = " ".join(vocabulary[rng.integers(len(WORDS), size=12)])
        dense = " ".join(vocabulary[rng.integers(len(WORDS), size=90)])
        records.append(CaptionRecord(id=f"{i:09d}", captions=[f"{real} #{i}", f"{dense} #{i}"],
                                     sources=["caption", "longSV"]))  # txt is `caption` in shards
    return records


def write_store(records, out: Path, llm: str) -> Path:
    from llm2clip.embeddings import write_embedding_store
    from llm2clip.text import CaptionEncoder

    encoder = CaptionEncoder.from_pretrained(llm, precision="fp32")
    encoder.encode = lambda captions, batch_size=64, show_progress=False: torch.zeros(len(captions), encoder.dim)
    return write_embedding_store(encoder, records, out, dtype="fp16", shard_size=65_536, batch_size=4096)


def write_shards(records, out: Path, image_kb: int) -> list[str]:
    import webdataset as wds

    rng = np.random.default_rng(1)
    out.mkdir(parents=True)
    urls = []
    for start in range(0, len(records), PER_SHARD):
        url = str(out / f"{start // PER_SHARD:05d}.tar")
        with wds.TarWriter(url) as sink:
            for r in records[start:start + PER_SHARD]:
                sink.write({"__key__": r.id, "jpg": rng.bytes(image_kb * 1024), "txt": r.captions[0],
                            "json": json.dumps({"longSV": r.captions[1]})})
        urls.append(url)
    return urls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500_000, help="records of 2 captions each")
    parser.add_argument("--shard-samples", type=int, default=100_000, help="webdataset samples (first records)")
    parser.add_argument("--image-kb", type=int, default=16, help="bytes of each sample's (random) jpg member")
    parser.add_argument("--store-llm", default="random:64x1", help="gives the store an identity only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.shard_samples, args.image_kb, args.repeats = 1000, 200, 1, 1
    from llm2clip.data.webdataset_source import iter_shard, shard_captions
    from llm2clip.embeddings import EmbeddingStore
    from llm2clip.embeddings.alignment import verify_alignment

    root = Path(tempfile.mkdtemp(prefix="bench-store-verify-"))
    device = torch.device("cpu")
    records = make_records(args.samples)
    store_dir = write_store(records, root / "store", bc.tiny_or_named_llm(args.store_llm, root))
    urls = write_shards(records[:args.shard_samples], root / "shards", args.image_kb)
    store = EmbeddingStore.open(store_dir)
    fields = ["caption", "longSV"]
    n_captions, n_shard_captions = 2 * len(records), 2 * args.shard_samples

    def check_records():
        found = verify_alignment(store, ((r.id, r.caption_by_source()) for r in records), fields, "records", "")
        assert found.captions == n_captions and found.count == 0

    def hash_only():
        for r in records:
            for text in r.captions:
                hashlib.sha256(text.encode("utf-8")).digest()

    def check_shards():
        found = verify_alignment(store, shard_captions(urls), fields, "shards", "")
        assert found.captions == n_shard_captions and found.count == 0

    def read_shards_in_full():
        assert sum(1 for url in urls for _ in iter_shard(url)) == args.shard_samples

    times = bc.interleaved({"check_records": check_records, "sha256_only": hash_only,
                            "check_shards": check_shards, "read_shards_in_full": read_shards_in_full},
                           args.repeats, device)
    med = {k: bc.median(v) for k, v in times.items()}
    per_million = {"check_records": med["check_records"] / n_captions * 1e6,
                   "sha256_only": med["sha256_only"] / n_captions * 1e6,
                   "check_shards": med["check_shards"] / n_shard_captions * 1e6,
                   "read_shards_in_full": med["read_shards_in_full"] / n_shard_captions * 1e6}
    target = 60.0  # seconds per 10 M captions
    rows = [
        ["records: check (hash + row lookup + compare)", f"{n_captions:,} captions", med["check_records"],
         per_million["check_records"], 10 * per_million["check_records"], 10 * per_million["check_records"] < target],
        ["records: sha256 alone (the floor)", f"{n_captions:,} captions", med["sha256_only"],
         per_million["sha256_only"], 10 * per_million["sha256_only"], "-"],
        [f"shards: pre-pass + check ({args.image_kb} KB images seeked over)", f"{n_shard_captions:,} captions",
         med["check_shards"], per_million["check_shards"], 10 * per_million["check_shards"],
         10 * per_million["check_shards"] < target],
        ["shards: reading them in full, for comparison", f"{n_shard_captions:,} captions",
         med["read_shards_in_full"], per_million["read_shards_in_full"], 10 * per_million["read_shards_in_full"],
         "-"],
    ]
    table = bc.markdown_table(["what", "size", "seconds", "s per 1 M captions", "s per 10 M captions",
                               "< 60 s per 10 M?"], rows)
    table += (f"\n\nOne process, medians of {args.repeats} interleaved runs; captions ~12 and ~90 words; "
              f"shards of {PER_SHARD} samples in the page cache. Opening the store (its id index) is not "
              "included: training opens it anyway.")
    shutil.rmtree(root, ignore_errors=True)
    bc.write_result("store_verify", {"samples": args.samples, "shard_samples": args.shard_samples,
                                     "image_kb": args.image_kb, "seconds": times,
                                     "seconds_per_million_captions": per_million}, table, args.out_dir)


if __name__ == "__main__":
    main()
