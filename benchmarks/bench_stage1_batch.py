"""Stage 1: a large contrastive batch in a memory budget with GradCache (`train.micro_batch`),
and what GradCache costs per sample next to the plain step.

    python benchmarks/bench_stage1_batch.py            # 512 pairs in pieces of 16; plain vs micro at 16 pairs
    python benchmarks/bench_stage1_batch.py --batch 512 --micro-batch 16 --timing-batch 0   # the target alone
    python benchmarks/bench_stage1_batch.py --batch 0 --timing-batch 16 --timing-micro-batch 4  # the timing alone
    python benchmarks/bench_stage1_batch.py --quick    # a tiny random Llama, seconds

Every variant runs the real trainer, `train_stage1` (supervised SimCSE, LoRA r=16 on every
projection as in configs/stage1/demo.yaml, CRA off: this measures training), in a fresh
process, on caption pairs long enough that every caption (with the instruction) is cut at
`model.max_length` tokens: the demo's dense caption against its long caption followed by its
walk-through (llm2clip.demo.scenes). The child checks that every caption was truncated, so
each step holds batch x 2 x max_length tokens.

Memory: on the CPU the process's peak resident set (VmHWM, what `/usr/bin/time -v` reports)
and VmHWM minus the RSS after the imports (the figure bench_stage2_step.py reports); glibc's
mmap threshold is held as the `llm2clip` command holds it (llm2clip/allocator.py). On CUDA:
`torch.cuda.max_memory_allocated`. Time: seconds per training step from the trainer's own
metrics.jsonl, the first step of each process left out; the plain and micro-batched variants
run in alternating processes (A, B, A, B, ...), so load from other jobs hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import bench_common as bc

CAPTION_FIELDS = ("dense", "long_walk")  # captions 1 and 2 of a record: the SimCSE pair


def write_pairs(path: Path, n: int) -> None:
    """`n` caption records of the demo's scenes, each caption longer than 128 tokens (mostly)."""
    from llm2clip.demo.scenes import make_scenes

    with path.open("w", encoding="utf-8") as out:
        for i, scene in enumerate(make_scenes(n, seed=0)):
            c = scene.captions
            row = {"id": f"pair-{i}", "dense": c["dense"] + " " + c["walk"],
                   "long_walk": c["long"] + " " + c["walk"]}
            out.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------ one variant, in a fresh process
def child(spec: dict) -> None:
    import torch

    from llm2clip.allocator import limit_heap_retention
    from llm2clip.config import load_config, packaged_config
    from llm2clip.train.stage1 import train_stage1
    from llm2clip.train.stage1_config import Stage1Config

    device = bc.pick_device(spec["device"])
    if device.type == "cpu":
        limit_heap_retention()  # as the `llm2clip` command does at its start
    fields = "[" + ", ".join(CAPTION_FIELDS) + "]"
    overrides = [
        f"model.name={spec['model']}", f"model.max_length={spec['max_length']}",
        f"model.gradient_checkpointing={'true' if spec['checkpointing'] else 'false'}",
        f"data.train={spec['data']}", f"data.caption_fields={fields}", "data.text_pair_ratio=0",
        f"train.output_dir={spec['out']}", f"train.batch_size={spec['batch']}",
        f"train.max_steps={spec['steps']}", f"train.save_every={spec['steps']}", "train.warmup_steps=0",
        f"train.device={device.type}", "eval.cra=null",
    ]
    if spec["micro_batch"]:
        overrides.append(f"train.micro_batch={spec['micro_batch']}")
    cfg = load_config(Stage1Config, packaged_config("stage1/demo.yaml"), overrides)
    torch.manual_seed(0)
    memory = bc.PeakMemory(device)  # after the imports: the model's weights are charged to the variant
    after_imports = bc.rss_bytes()
    summary = train_stage1(cfg)
    peak = memory.peak()
    rows = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    captions = 2 * spec["batch"] * spec["steps"]
    if summary["truncated_captions"] < captions:
        raise SystemExit(f"only {summary['truncated_captions']} of {captions} captions reached "
                         f"{spec['max_length']} tokens: the step holds fewer tokens than the benchmark claims")
    bc.report_child({"peak_bytes": peak, "memory_kind": memory.kind, "peak_rss": bc.peak_rss_bytes(),
                     "rss_after_imports": after_imports, "truncated_captions": summary["truncated_captions"],
                     "step_seconds": [spec["batch"] / r["pairs_per_s"] for r in steps],
                     "losses": [r["loss"] for r in steps]})


def run_variant(args, work: Path, name: str, batch: int, micro: int, steps: int) -> dict:
    spec = {"model": args.model, "max_length": args.max_length, "checkpointing": args.checkpointing == "on",
            "data": str(work / "pairs.jsonl"), "out": str(work / f"run-{name}"), "batch": batch,
            "micro_batch": micro, "steps": steps, "device": args.device}
    print(f"{name}: batch {batch} pairs, micro-batch {micro or '-'}, {steps} step(s) ...", file=sys.stderr, flush=True)
    result = bc.run_child(__file__, spec, timeout=args.timeout)
    print(f"  peak {result['peak_bytes'] / bc.GIB:.2f} GiB, steps {[round(s, 1) for s in result['step_seconds']]} s",
          file=sys.stderr, flush=True)
    return {**spec, **result}


def gib(value: int) -> str:
    return f"{value / bc.GIB:.2f}"


# ------------------------------------------------------------------ driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="embedded name, HF id or folder")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per caption (every caption is cut there)")
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on",
                        help="model.gradient_checkpointing in every variant")
    parser.add_argument("--batch", type=int, default=512, help="pairs of the budget variant (0: skip it)")
    parser.add_argument("--micro-batch", type=int, default=16, help="train.micro_batch of the budget variant")
    parser.add_argument("--steps", type=int, default=1, help="training steps of the budget variant")
    parser.add_argument("--timing-batch", type=int, default=16,
                        help="pairs per step of the plain vs micro-batched timing (0: skip it)")
    parser.add_argument("--timing-micro-batch", type=int, default=4)
    parser.add_argument("--timing-steps", type=int, default=2, help="steps per timing process (the first is left out)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain/micro processes per variant")
    parser.add_argument("--budget-gib", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per process")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="a tiny random Llama, small sizes (a smoke test)")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    work = Path(tempfile.mkdtemp(prefix="bench-stage1-batch-"))
    if args.quick:
        from llm2clip.testing.random_llm import save_random_llm

        args.model = str(save_random_llm(work / "tiny-llama", "llama", hidden_size=64, num_layers=2))
        args.max_length, args.batch, args.micro_batch = 64, 8, 2
        args.timing_batch, args.timing_micro_batch, args.timing_steps, args.rounds = 4, 2, 2, 1
    needed = max(args.batch * args.steps, args.timing_batch * args.timing_steps)
    write_pairs(work / "pairs.jsonl", needed)
    device = bc.pick_device(args.device)
    budget = args.budget_gib * bc.GIB
    result: dict = {"model": args.model, "max_length": args.max_length, "checkpointing": args.checkpointing,
                    "device": str(device), "budget_gib": args.budget_gib, "variants": {}}
    tables: list[str] = []

    def save() -> None:  # after every variant: a long run that is stopped keeps what it measured
        bc.write_result("stage1_batch", result, "\n\n".join(tables) or "| (no variant finished) |", args.out_dir)

    if args.timing_batch:
        times: dict[str, list[float]] = {"plain": [], "micro": []}
        peaks: dict[str, list[int]] = {"plain": [], "micro": []}
        for r in range(args.rounds):
            for kind, micro in (("plain", 0), ("micro", args.timing_micro_batch)):
                name = f"timing-{kind}-{r}"
                out = run_variant(args, work, name, args.timing_batch, micro, args.timing_steps)
                result["variants"][name] = out
                times[kind] += out["step_seconds"][1:] or out["step_seconds"]
                peaks[kind].append(out["peak_bytes"])
        plain, micro = (bc.median(times[k]) / args.timing_batch for k in ("plain", "micro"))
        result["timing"] = {"batch": args.timing_batch, "micro_batch": args.timing_micro_batch,
                            "seconds_per_pair": {"plain": plain, "micro": micro}, "ratio": micro / plain}
        tables.append(bc.markdown_table(
            ["batch (pairs)", "variant", "s/pair (median)", "steps timed", "peak GiB", "micro / plain", "≤ 1.4×?"],
            [[args.timing_batch, "plain", f"{plain:.3f}", len(times["plain"]), gib(max(peaks["plain"])), "-", "-"],
             [args.timing_batch, f"micro-batch {args.timing_micro_batch}", f"{micro:.3f}", len(times["micro"]),
              gib(max(peaks["micro"])), f"{micro / plain:.2f}×", micro / plain <= 1.4]]))
        save()
    if args.batch:
        out = run_variant(args, work, "budget", args.batch, args.micro_batch, args.steps)
        result["variants"]["budget"] = out
        rows = [[args.batch, args.micro_batch or "-", gib(out["peak_bytes"]),
                 gib(out["peak_rss"]) if device.type == "cpu" else "-", f"{bc.median(out['step_seconds']):.0f}",
                 out["peak_bytes"] <= budget and (device.type != "cpu" or out["peak_rss"] <= budget)]]
        tables.append(bc.markdown_table(
            ["batch (pairs)", "micro-batch", "peak GiB (over imports)", "peak RSS GiB (VmHWM)", "step s",
             f"≤ {args.budget_gib:g} GiB?"], rows))
        save()
    note = (f"{args.model}, {args.max_length} tokens per caption (every caption truncated there), gradient "
            f"checkpointing {args.checkpointing}, LoRA r=16, fresh process per variant; memory: "
            + ("cuda max_memory_allocated" if device.type == "cuda" else "peak RSS, glibc mmap threshold as llm2clip sets it"))
    tables.append(note)
    save()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
