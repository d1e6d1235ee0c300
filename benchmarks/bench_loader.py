"""The stage-2 loader's images/s (0, 1, 2 workers) against what a training step consumes.

    python benchmarks/bench_loader.py                  # demo emoji images, EfficientNet-Lite0, batch 32
    python benchmarks/bench_loader.py --quick
    python benchmarks/bench_loader.py --images 512 --batch 64 --workers 0 1 2 4

The loader is the trainer's own: `build_dataset` (caption choice real/dense, the tower's
preprocessing, offline embeddings from a store) + `DataLoader(collate_samples,
StepBatchSampler(BatchPlan))`, as `train_stage2` builds it, over the demo's rendered
emoji scenes (224×224 PNGs). The store holds embeddings of the demo's width (576, as
SmolLM2-135M) from a one-layer random LLM, which only makes writing it fast: reading is
what is measured. Worker start-up is excluded (timing starts at the first batch).
The step: an offline stage-2 step (bench_stage2_step.Stage2Step: forward, backward, AdamW)
with the same tower at the same batch. Variants are interleaved; medians.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import bench_common as bc
import torch


def make_data(root: Path, n_images: int, llm: str):
    from llm2clip.demo.rendering import write_image_dataset
    from llm2clip.demo.scenes import make_split
    from llm2clip.data.records import read_caption_records
    from llm2clip.embeddings import write_embedding_store
    from llm2clip.text import CaptionEncoder

    index = write_image_dataset(make_split(n_images, 0)[0], root / "data")
    records, _ = read_caption_records(index, caption_fields=["short", "dense"], require_all_fields=False)
    encoder = CaptionEncoder.from_pretrained(llm, precision="fp32")
    store = write_embedding_store(encoder, records, root / "store", batch_size=64)
    return index, store


def build_loader(index: Path, store_dir: Path, tower, batch: int, workers: int, steps: int):
    from torch.utils.data import DataLoader

    from llm2clip.data.batch_plan import BatchPlan
    from llm2clip.data.image_text import StepBatchSampler, collate_samples
    from llm2clip.embeddings import EmbeddingStore
    from llm2clip.train.stage2 import build_dataset
    from llm2clip.train.stage2_config import Stage2Config

    cfg = Stage2Config()
    cfg.data.train, cfg.data.real_fields, cfg.data.dense_fields = str(index), ["short"], ["dense"]
    dataset = build_dataset(cfg, SimpleNamespace(vision=tower), EmbeddingStore.open(store_dir))
    plan = BatchPlan(len(dataset), batch, seed=0)
    return DataLoader(dataset, collate_fn=collate_samples, num_workers=workers,
                      batch_sampler=StepBatchSampler(plan, 0, steps))


def loader_seconds_per_batch(index, store_dir, tower, batch: int, workers: int, batches: int) -> float:
    loader = iter(build_loader(index, store_dir, tower, batch, workers, batches + 1))
    next(loader)  # start-up (and the workers' first batch) not counted
    began = time.perf_counter()
    for _ in range(batches):
        out = next(loader)
        assert len(out["ids"]) == batch, out["skipped"]
    seconds = (time.perf_counter() - began) / batches
    del loader
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32, help="the demo's stage-2 batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=4, help="timed batches per loader run")
    parser.add_argument("--vision", default="efficientnet-lite0")
    parser.add_argument("--store-llm", default="random:576x1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch, args.batches, args.repeats, args.store_llm = 24, 4, 2, 1, "random:64x1"
    from bench_stage2_step import Stage2Step

    from llm2clip.vision import load_vision_tower

    root = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    device = bc.pick_device(args.device)
    index, store_dir = make_data(root, args.images, bc.tiny_or_named_llm(args.store_llm, root))
    tower = load_vision_tower(args.vision)
    dim = int(__import__("json").loads((Path(store_dir) / "store.json").read_text())["dim"])
    step = Stage2Step("offline", "", args.vision, args.batch, device, dim=dim)
    variants = {f"loader_{w}_workers": (lambda w=w: loader_seconds_per_batch(index, store_dir, tower, args.batch, w,
                                                                           args.batches))
                for w in args.workers}
    # a loader run times its own batches (start-up excluded), so collect those, not wall time
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    seconds["step"] = []
    step.step()  # warm-up
    for _ in range(args.repeats):
        for name, fn in variants.items():
            seconds[name].append(fn())
        seconds["step"].append(bc.timed(step.step, device))
    med = {k: bc.median(v) for k, v in seconds.items()}
    step_rate = args.batch / med["step"]
    rows = []
    for w in args.workers:
        rate = args.batch / med[f"loader_{w}_workers"]
        rows.append([w, f"{rate:.1f}", f"{rate / max(1, w):.1f}", f"{step_rate:.1f}", f"{rate / step_rate:.2f}×",
                     rate > step_rate])
    table = bc.markdown_table(["workers", "loader images/s", "per worker", "step consumes images/s",
                               "loader / step", "loader faster?"], rows)
    table += (f"\n\n{args.images} demo emoji images (224², PNG), {args.vision} preprocessing and offline step, batch "
              f"{args.batch}; step {med['step']:.2f} s; medians of {args.repeats} interleaved runs "
              f"({args.batches} batches per loader run, start-up excluded). On 2 cores the workers and the step "
              "share the CPU during training.")
    shutil.rmtree(root, ignore_errors=True)
    bc.write_result("loader", {"batch": args.batch, "vision": args.vision, "seconds": seconds,
                               "step_images_per_s": step_rate}, table, args.out_dir)


if __name__ == "__main__":
    main()
