"""What checking a store against its data costs before stage 2 (embeddings/alignment.py).

    python benchmarks/bench_store_verify.py                  # 1 M captions; 50k shard samples of 16 KB images
    python benchmarks/bench_store_verify.py --quick
    python benchmarks/bench_store_verify.py --samples 2000000 --shard-samples 200000 --image-kb 32

Records: `--samples` caption records, each a real caption (~12 words) and a dense one
(~90 words, DreamLIP-like lengths), all stored; timed is the check stage 2 runs on
CSV/JSONL data (`verify_alignment` over the records: hash every caption, look its row
up, compare with the memory-mapped text hashes in chunks), next to sha256 of the same
captions alone (the floor: the check cannot be cheaper than hashing). The store's
embeddings are irrelevant to the check, so the writer is handed zero vectors (the
encoder's `encode` is replaced) and a one-layer random LLM only gives it an identity.

Shards: the first `--shard-samples` records as webdataset shards (txt + json + a random
`--image-kb` KB jpg per sample, 1000 per shard, written by webdataset's TarWriter) on
local disk, checked as stage 2 does (`shard_captions`: only the caption members are
read, tarfile seeks over the images; in 0 or `--workers` worker processes), next to
reading the same shards in full (`iter_shard`, what the training stream reads). Before
every shard run the files are dropped from the page cache (posix_fadvise DONTNEED), so
each run reads the disk.

Variants are interleaved and repeated; medians of wall time, and of CPU seconds (this
process and its workers: what the work costs when the cores are not shared). Figures
are per million captions (the shards hold 2 captions per sample).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
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
    from llm2clip.text import CaptionEncoder, TextEmbeddings

    encoder = CaptionEncoder.from_pretrained(llm, precision="fp32")
    encoder.encode = lambda captions, batch_size=64, show_progress=False: TextEmbeddings.of(  # rows, none cut
        torch.zeros(len(captions), encoder.dim), 0)
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


def drop_from_page_cache(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=500_000, help="records of 2 captions each")
    parser.add_argument("--shard-samples", type=int, default=50_000, help="webdataset samples (the first records)")
    parser.add_argument("--image-kb", type=int, default=16, help="bytes of each sample's (random) jpg member")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the parallel pre-pass")
    parser.add_argument("--store-llm", default="random:64x1", help="gives the store an identity only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.shard_samples, args.image_kb, args.repeats = 1000, 2000, 1, 1
    from llm2clip.data.webdataset_source import iter_shard, shard_captions
    from llm2clip.embeddings import EmbeddingStore
    from llm2clip.embeddings.alignment import verify_alignment

    root = Path(tempfile.mkdtemp(prefix="bench-store-verify-"))
    records = make_records(args.samples)
    store_dir = write_store(records, root / "store", bc.tiny_or_named_llm(args.store_llm, root))
    urls = write_shards(records[:args.shard_samples], root / "shards", args.image_kb)
    store = EmbeddingStore.open(store_dir)
    fields = ["caption", "longSV"]
    n_shard_samples = min(args.shard_samples, len(records))
    size = {"records": 2 * len(records), "sha256": 2 * len(records)}

    def check_records():
        found = verify_alignment(store, ((r.id, r.caption_by_source()) for r in records), fields, "records", "")
        assert found.captions == size["records"] and found.count == 0

    def sha256_only():
        for r in records:
            for text in r.captions:
                hashlib.sha256(text.encode("utf-8")).digest()

    def check_shards(workers: int):
        drop_from_page_cache(urls)
        found = verify_alignment(store, shard_captions(urls, workers=workers), fields, "shards", "")
        assert found.captions == 2 * n_shard_samples and found.count == 0

    def read_shards_in_full():
        drop_from_page_cache(urls)
        assert sum(1 for url in urls for _ in iter_shard(url)) == n_shard_samples

    variants = {"records: check (hash + row lookup + compare)": check_records,
                "records: sha256 alone (the floor)": sha256_only,
                "shards: pre-pass + check, 1 process": lambda: check_shards(0),
                f"shards: pre-pass + check, {args.workers} workers": lambda: check_shards(args.workers),
                "shards: reading them in full (no check), for comparison": read_shards_in_full}
    for name in variants:
        size.setdefault(name, size["records"] if name.startswith("records") else 2 * n_shard_samples)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(args.repeats):  # interleaved: load from other jobs hits every variant alike
        for name, fn in variants.items():
            began_cpu, began = cpu_seconds(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - began)
            cpu[name].append(cpu_seconds() - began_cpu)
            print(f"  {name}: {wall[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU", file=sys.stderr, flush=True)
    target = 60.0  # seconds per 10 M captions
    rows, per_million = [], {}
    for name in variants:
        n = size[name]
        w, c = bc.median(wall[name]) / n * 1e6, bc.median(cpu[name]) / n * 1e6
        per_million[name] = {"wall": w, "cpu": c}
        met = (10 * w < target, 10 * c < target) if "alone" not in name and "full" not in name else "-"
        rows.append([name, f"{n:,}", f"{w:.2f}", f"{c:.2f}", f"{10 * w:.0f}", f"{10 * c:.0f}",
                     met if met == "-" else f"{'yes' if met[0] else '**no**'} / {'yes' if met[1] else '**no**'}"])
    table = bc.markdown_table(["what", "captions", "wall s per 1 M", "CPU s per 1 M", "wall s per 10 M",
                               "CPU s per 10 M", "< 60 s per 10 M (wall / CPU)?"], rows)
    table += (f"\n\nMedians of {args.repeats} interleaved runs; captions ~12 and ~90 words; shards of {PER_SHARD} "
              f"samples with {args.image_kb} KB images, dropped from the page cache before each shard run. CPU "
              "seconds include the workers. Opening the store (its id index) is not included: training opens it "
              "anyway.")
    shutil.rmtree(root, ignore_errors=True)
    bc.write_result("store_verify", {"samples": args.samples, "shard_samples": n_shard_samples,
                                     "image_kb": args.image_kb, "workers": args.workers, "wall_seconds": wall,
                                     "cpu_seconds": cpu, "per_million_captions": per_million}, table, args.out_dir)


if __name__ == "__main__":
    main()
