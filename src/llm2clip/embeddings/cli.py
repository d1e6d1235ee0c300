"""`llm2clip embed`: run a frozen caption encoder over a caption file into an embedding store.

One process:  llm2clip embed --model runs/stage1/final --data captions.jsonl --out emb/
Many:         torchrun --nproc_per_node=8 -m llm2clip.cli embed ...   (rank r writes shards
              k % W == r; rank 0 writes the manifest), or independent jobs with
              --rank/--world-size (the last to finish writes the manifest).
A killed run is resumed by rerunning the same command.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

from ..arg_types import positive_int
from ..choices import PRECISIONS
from .quantize import DTYPES


def add_embed_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("embed", help="store the caption encoder's embeddings of every caption (offline stage 2)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="caption encoder: stage-1 folder, embedded name, HF id or path")
    p.add_argument("--data", required=True, help="caption records file (CSV/TSV/JSONL/JSON) or webdataset shards (\"shards/{00000..00099}.tar\")")
    p.add_argument("--fields", nargs="+", help="caption fields to embed (default: the reader's default fields)")
    p.add_argument("--out", required=True, help="store folder (rerun the same command to resume)")
    p.add_argument("--dtype", choices=DTYPES, default="fp16", help="storage dtype (default fp16)")
    p.add_argument("--shard-size", type=positive_int, default=4096, help="captions per shard")
    p.add_argument("--batch-size", type=positive_int, default=64, help="captions per forward pass")
    p.add_argument("--id-field", default="id", help="the field holding each sample's id")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="compute precision (auto: bf16 on GPUs that support it, else fp32)")
    p.add_argument("--device", help="default: this rank's GPU if there is one, else cpu")
    p.add_argument("--rank", type=int, help="this job's rank, for jobs launched without torchrun")
    p.add_argument("--world-size", type=int, help="number of jobs, for jobs launched without torchrun")
    grow = p.add_mutually_exclusive_group()
    grow.add_argument("--overwrite", action="store_true",
                      help="replace a store of another plan (encoder, dtype, captions, shard size) in --out")
    grow.add_argument("--extend", action="store_true",
                      help="add the captions of --data that the finished store in --out lacks; every caption "
                      "it holds must be in --data, unchanged")
    p.set_defaults(run=run_embed)
    return p


def run_embed(args) -> int:
    from ..data.records import read_caption_records
    from ..data.webdataset_source import is_shard_spec, read_webdataset_records
    from ..devices import check_device_name
    from ..output_paths import require_writable_folder
    from ..text import load_caption_encoder
    from .writer import write_embedding_store

    require_writable_folder(args.out, "--out")  # before reading data or loading the encoder
    if args.device:
        check_device_name(args.device)
    started = _init_distributed()
    try:
        from .. import distributed as dist_utils

        main = dist_utils.rank() == 0 and (args.rank or 0) == 0
        logging.basicConfig(level=logging.INFO if main else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if is_shard_spec(args.data):
            records = read_webdataset_records(args.data, caption_fields=args.fields)
            summary = f"{args.data}: {len(records)} samples with captions"
        else:
            records, stats = read_caption_records(args.data, caption_fields=args.fields, id_field=args.id_field)
            summary = stats.summary()
        if main:
            logging.getLogger("llm2clip").info("%s", summary)
        encoder = load_caption_encoder(args.model, device=args.device or _default_device(),
                                       precision=args.precision)
        encoder.requires_grad_(False)
        out = write_embedding_store(encoder, records, args.out, dtype=args.dtype, shard_size=args.shard_size,
                                    batch_size=args.batch_size, rank=args.rank, world_size=args.world_size,
                                    show_progress=main, overwrite=args.overwrite, extend=args.extend)
        if main:
            done = (out / "store.json").is_file()
            print(json.dumps({"store": str(out), "complete": done, "records": len(records),
                              "dim": encoder.dim, "dtype": args.dtype}, indent=2))
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); True if we did."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"
