"""`llm2clip index` and `llm2clip search`.

    llm2clip index --model runs/stage2/final --images photos/ --out photos.index
    llm2clip search photos.index "a long description, in any language" --k 10 --html results.html
    llm2clip search photos.index --image query.png
A killed `index` run is resumed by rerunning the same command.
"""
from __future__ import annotations

import argparse
import json
import logging

from .faiss_index import KINDS


def add_search_parsers(subparsers) -> None:
    from ..arg_types import positive_int

    p = subparsers.add_parser("index", help="embed a folder (or webdataset shards) of images into a search index",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model folder (stage 2's final/, or a baseline folder)")
    p.add_argument("--images", required=True, help="a folder of images (searched recursively) or webdataset "
                   "shards (\"shards/{00000..00009}.tar\")")
    p.add_argument("--out", required=True, help="index folder (rerun the same command to resume)")
    p.add_argument("--kind", choices=KINDS, default="flat",
                   help="flat: exact inner product (default); ivf or hnsw: approximate, for millions of images")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="vector storage (default fp16)")
    p.add_argument("--nlist", type=positive_int, help="ivf: number of cells (default about 4 sqrt(N))")
    p.add_argument("--nprobe", type=positive_int, help="ivf: cells a query visits by default (16)")
    p.add_argument("--hnsw-m", type=positive_int, help="hnsw: links per node (32)")
    p.add_argument("--ef-search", type=positive_int, help="hnsw: candidates a query explores by default (64)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--shard-size", type=positive_int, default=1024, help="images per resumable shard")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--overwrite", action="store_true", help="replace an index of another model in --out")
    p.set_defaults(run=run_index)

    p = subparsers.add_parser("search", help="search an index with text (any length or language) or an image",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index", help="an index folder written by `llm2clip index`")
    p.add_argument("queries", nargs="*", help="text queries (one result list each)")
    p.add_argument("--image", action="append", default=[], help="an image query (repeatable)")
    p.add_argument("--k", type=positive_int, default=10, help="results per query (default 10)")
    p.add_argument("--html", help="also write a gallery page here (thumbnails in <name>_files/ next to it)")
    p.add_argument("--model", help="the model folder (default: the one that built the index; another is refused)")
    p.add_argument("--nprobe", type=positive_int, help="ivf index: cells to visit")
    p.add_argument("--ef-search", type=positive_int, help="hnsw index: candidates to explore")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(run=run_search)


def run_index(args) -> int:
    from ..devices import check_device_name
    from ..output_paths import require_writable_folder
    from .build import build_index
    from .faiss_index import IndexKind, import_faiss

    require_writable_folder(args.out, "--out")
    check_device_name(args.device)
    import_faiss()  # a missing extra fails before the model loads
    options = {"nlist": ("ivf", args.nlist), "nprobe": ("ivf", args.nprobe), "hnsw_m": ("hnsw", args.hnsw_m),
               "ef_search": ("hnsw", args.ef_search)}
    for name, (kind, value) in options.items():
        if value is not None and args.kind != kind:
            raise ValueError(f"--{name.replace('_', '-')} is for --kind {kind}, not --kind {args.kind}")
    kind = IndexKind(kind=args.kind, dtype=args.dtype,
                     **{name: value for name, (_, value) in options.items() if value is not None})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = build_index(args.model, args.images, args.out, kind=kind, batch_size=args.batch_size,
                      shard_size=args.shard_size, device=args.device, show_progress=True, overwrite=args.overwrite)
    manifest = json.loads((out / "index.json").read_text(encoding="utf-8"))
    print(json.dumps({"index": str(out), "images": manifest["count"], "indexed": manifest["indexed"],
                      "skipped": manifest["skipped"], "kind": args.kind, "dtype": args.dtype,
                      "dim": manifest["dim"]}, indent=2))
    return 0


def run_search(args) -> int:
    from ..devices import check_device_name
    from ..output_paths import require_writable_file
    from .gallery import QueryResult, write_gallery
    from .index import Index

    if not args.queries and not args.image:
        raise ValueError("give a text query, or --image QUERY.png")
    if args.html:
        require_writable_file(args.html, "--html")
    check_device_name(args.device)
    index = Index.open(args.index, model=args.model, device=args.device)
    for flag, kind in (("nprobe", "ivf"), ("ef_search", "hnsw")):
        if getattr(args, flag) is not None and index.kind.kind != kind:
            raise ValueError(f"--{flag.replace('_', '-')} is for an {kind} index; {args.index} is {index.kind.kind}")
    params = {"nprobe": args.nprobe, "ef_search": args.ef_search}
    results = []
    if args.queries:
        results += [QueryResult(q, hits) for q, hits in zip(args.queries, index.search(args.queries, args.k, **params))]
    if args.image:
        hits = index.search_images(args.image, args.k, **params)
        results += [QueryResult(f"image: {path}", found) for path, found in zip(args.image, hits)]
    if args.json:
        print(json.dumps([{"query": r.query, "results": [{"rank": h.rank, "score": round(h.score, 6), "image": h.key}
                                                         for h in r.hits]} for r in results], indent=2,
                         ensure_ascii=False))
    else:
        for result in results:
            print(f"query: {result.query}")
            for hit in result.hits:
                print(f"{hit.rank:4d}  {hit.score:.4f}  {hit.key}")
    if args.html:
        print(f"gallery: {write_gallery(args.html, results)}")
    return 0
