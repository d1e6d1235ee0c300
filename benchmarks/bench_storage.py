"""The embedding store's size per storage dtype, and what each dtype costs in retrieval.

    python benchmarks/bench_storage.py                 # SmolLM2-135M on the demo's 300 test scenes
    python benchmarks/bench_storage.py --quick         # a tiny random LLM, 20 scenes

The same captions (the demo's emoji test split: caption 1 = `short`, caption 2 =
`short_alt`, the CRA pair) are stored at fp32, fp16, bf16 and int8 by
`write_embedding_store`, read back through `EmbeddingStore.get_many`, and used for
caption-to-caption retrieval (CRA, paper Table 1: caption 1 retrieves caption 2, both
directions reported). The encoder runs once: the writer is handed those exact fp32
embeddings (its `encode` is replaced by a lookup), so the dtypes differ only in storage.
Bytes: the shard files on disk (embeddings + per-row text hashes + ids/fields metadata)
and the embedding tensors alone.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import bench_common as bc
import torch

DTYPES = ("fp32", "fp16", "bf16", "int8")
FIELDS = ("short", "short_alt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="smollm2-135m", help="embedded name, folder, or random:HIDDENxLAYERS")
    parser.add_argument("--train-scenes", type=int, default=1200, help="the demo's split: test scenes follow these")
    parser.add_argument("--test-scenes", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.llm, args.train_scenes, args.test_scenes = "random:64x2", 20, 20
    from llm2clip.demo.scenes import caption_records, make_split
    from llm2clip.embeddings import EmbeddingStore, write_embedding_store
    from llm2clip.embeddings.quantize import INT8_MAX
    from llm2clip.eval.retrieval import retrieval_metrics
    from llm2clip.text import CaptionEncoder, TextEmbeddings

    root = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    device = bc.pick_device(args.device)
    encoder = CaptionEncoder.from_pretrained(bc.tiny_or_named_llm(args.llm, root), precision="fp32", device=device)
    records = caption_records(make_split(args.train_scenes, args.test_scenes)[1], fields=FIELDS)
    texts = [c for r in records for c in r.captions]
    exact = dict(zip(texts, encoder.encode(texts, batch_size=args.batch_size)))
    # later writes serve these rows (an encode result: rows + how many were cut; the real call logged its cuts)
    encoder.encode = lambda captions, batch_size=32, show_progress=False: TextEmbeddings.of(
        torch.stack([exact[c] for c in captions]), 0)

    def cra(first: torch.Tensor, second: torch.Tensor) -> dict[str, float]:
        m = retrieval_metrics(second, first, list(range(len(first))), ks=(1,))  # caption 1 -> caption 2 = "t2i"
        return {"caption1_to_2_R@1": m["t2i_R@1"], "caption2_to_1_R@1": m["i2t_R@1"]}

    ids = [r.id for r in records]
    truth_rows = [torch.stack([exact[r.captions[i]] for r in records]) for i in (0, 1)]  # caption 1, caption 2
    truth = torch.cat(truth_rows)
    reference = cra(*truth_rows)
    runs = {}
    for dtype in DTYPES:
        out = write_embedding_store(encoder, records, root / dtype, dtype=dtype, batch_size=args.batch_size)
        store = EmbeddingStore.open(out)
        first, second = (torch.from_numpy(store.get_many(ids, field)) for field in ("0", "1"))
        from safetensors import safe_open

        tensor_bytes = 0
        for shard in out.glob("shard-*.safetensors"):
            with safe_open(str(shard), "pt") as f:
                tensor_bytes += sum(f.get_tensor(k).nbytes for k in f.keys() if k in ("embeddings", "scale"))
        stored = torch.cat([first, second])
        runs[dtype] = {"file_bytes": sum(p.stat().st_size for p in out.glob("shard-*.safetensors")),
                       "embedding_bytes": tensor_bytes, "max_abs_error": (stored - truth).abs().max().item(),
                       **cra(first, second)}
    # what-if (not a store dtype): int8 with one scale per shard instead of per row, i.e.
    # exactly 1/4 of fp32; the store's shards hold 4,096 rows, more than this whole set
    scale = truth.abs().max() / INT8_MAX
    shard_scaled = [torch.round(t / scale).clamp(-INT8_MAX, INT8_MAX) * scale for t in truth_rows]
    what_if = {"embedding_bytes": runs["fp32"]["embedding_bytes"] // 4,
               "max_abs_error": (torch.cat(shard_scaled) - truth).abs().max().item(), **cra(*shard_scaled)}
    rows = [table_row(dtype, run, runs["fp32"], reference, len(texts)) for dtype, run in runs.items()]
    rows.append(table_row("int8, one scale per shard (what-if)", what_if, runs["fp32"], reference, len(texts)))
    table = bc.markdown_table(
        ["dtype", "file bytes/caption", "file / fp32", "embedding bytes/caption", "embeddings / fp32", "target",
         "met?", "CRA R@1 (1→2 / 2→1)", "R@1 drop vs exact", "≤ 0.5?", "max |error|"], rows)
    table += (f"\n\n{args.llm} (dim {encoder.dim}), {len(records)} demo test scenes, {len(texts)} captions; "
              f"exact fp32 CRA R@1 {reference['caption1_to_2_R@1']:.2f} / {reference['caption2_to_1_R@1']:.2f}. "
              "File bytes include per-row text hashes (16 B) and ids/fields metadata.")
    shutil.rmtree(root, ignore_errors=True)
    bc.write_result("storage", {"llm": args.llm, "dim": encoder.dim, "captions": len(texts), "exact": reference,
                                "dtypes": runs, "int8_shard_scale_what_if": what_if}, table, args.out_dir)


def table_row(label: str, run: dict, fp32: dict, reference: dict, n_texts: int) -> list:
    """One dtype's row; a run without `file_bytes` (the what-if) shows no file figures."""
    emb_ratio = run["embedding_bytes"] / fp32["embedding_bytes"]
    at_most = label.startswith("int8")  # int8's size target is a bound, the others' an equality
    target = 0.25 if at_most else {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5}[label]
    drop = max(reference[k] - run[k] for k in reference)
    has_file = "file_bytes" in run
    return [label, f"{run['file_bytes'] / n_texts:.0f}" if has_file else "-",
            f"{run['file_bytes'] / fp32['file_bytes']:.3f}" if has_file else "-",
            f"{run['embedding_bytes'] / n_texts:.0f}", f"{emb_ratio:.3f}",
            f"≤ {target:g}" if at_most else f"= {target:g}",
            emb_ratio <= target + 1e-9 if at_most else abs(emb_ratio - target) < 1e-9,
            f"{run['caption1_to_2_R@1']:.2f} / {run['caption2_to_1_R@1']:.2f}", f"{drop:.2f}", drop <= 0.5,
            f"{run['max_abs_error']:.1e}"]


if __name__ == "__main__":
    main()
