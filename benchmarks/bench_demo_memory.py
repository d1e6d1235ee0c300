"""Where the demo's peak memory goes: stage 1's training steps (the demo's config, model and
data: SmolLM2-135M, LoRA, 32 caption pairs per step) under each allocator setting and
memory option, each in a fresh process.

    python benchmarks/bench_demo_memory.py                 # every variant, 3 steps each
    python benchmarks/bench_demo_memory.py --variants glibc-default mallopt --steps 2
    python benchmarks/bench_demo_memory.py --quick         # a tiny random Llama, seconds

Each variant runs `train_stage1` itself (CRA off: this measures training) in a fresh
process whose environment is set before it starts, as a user's shell would:
  glibc-default     LLM2CLIP_MALLOC=default: glibc's dynamic mmap threshold
  mallopt           what `llm2clip` does at start (llm2clip/allocator.py: mmap threshold fixed)
  arena-max-2       MALLOC_ARENA_MAX=2 (fewer per-thread heaps), glibc threshold otherwise
  trim-128k         MALLOC_TRIM_THRESHOLD_=131072 (heap tops returned sooner)
  jemalloc          LD_PRELOAD of Debian's libjemalloc2 (skipped when not installed)
  checkpointing     mallopt + model.gradient_checkpointing=true
  micro-batch-8     mallopt + train.micro_batch=8 (skipped when the trainer has no such key)
Reported: the peak resident set of the whole process (VmHWM: what `/usr/bin/time -v`
calls maximum resident set size) and RSS after each step (sampled every 0.2 s), and the
median step time from metrics.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench_common as bc

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
VARIANTS = {
    "glibc-default": {"env": {"LLM2CLIP_MALLOC": "default"}, "mallopt": False, "overrides": []},
    "mallopt": {"env": {}, "mallopt": True, "overrides": []},
    "arena-max-2": {"env": {"LLM2CLIP_MALLOC": "default", "MALLOC_ARENA_MAX": "2"}, "mallopt": False,
                    "overrides": []},
    "trim-128k": {"env": {"LLM2CLIP_MALLOC": "default", "MALLOC_TRIM_THRESHOLD_": "131072"}, "mallopt": False,
                  "overrides": []},
    "jemalloc": {"env": {"LLM2CLIP_MALLOC": "default", "LD_PRELOAD": JEMALLOC}, "mallopt": False, "overrides": []},
    "checkpointing": {"env": {}, "mallopt": True, "overrides": ["model.gradient_checkpointing=true"]},
    "micro-batch-8": {"env": {}, "mallopt": True, "overrides": ["train.micro_batch=8"]},
}


class RssSampler(threading.Thread):
    """VmRSS every `every` seconds, in the background, as (seconds since start, bytes)."""

    def __init__(self, every: float = 0.2):
        super().__init__(daemon=True)
        self.every, self.samples, self.began, self.stop = every, [], time.perf_counter(), threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - self.began, bc.rss_bytes()))
            time.sleep(self.every)


# ------------------------------------------------------------------ one variant, in a fresh process
def child(spec: dict) -> None:
    if spec["mallopt"]:
        from llm2clip.allocator import limit_heap_retention

        assert limit_heap_retention(), "mallopt did not take"
    from llm2clip.demo import FAST, FULL, step_data
    from llm2clip.demo.run import stage1_config
    from llm2clip.train.stage1 import train_stage1

    size = FAST if spec["quick"] else FULL
    data = step_data(Path(spec["data"]), size)
    cfg = stage1_config(Path(spec["out"]), data, size)
    overrides = [f"train.max_steps={spec['steps']}", "eval.cra=null", f"train.save_every={spec['steps']}",
                 *spec["overrides"]]
    if spec["quick"]:
        overrides.append(f"model.name={spec['model']}")
    cfg = _apply(cfg, overrides)
    after_imports = bc.rss_bytes()
    sampler = RssSampler()
    sampler.start()
    train_stage1(cfg)
    sampler.stop.set()
    sampler.join()
    rows = [json.loads(line) for line in (Path(spec["out"]) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    bc.report_child({"peak_rss": bc.peak_rss_bytes(), "rss_after_imports": after_imports,
                     "step_seconds": [spec["pairs"] / r["pairs_per_s"] for r in steps],
                     "rss_samples": sampler.samples[::5]})


def _apply(cfg, overrides: list[str]):
    """The demo's resolved config with more `--set`-style overrides (through the YAML loader,
    so every key is checked)."""
    import yaml

    from llm2clip import config as config_mod
    from llm2clip.train.stage1_config import Stage1Config

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config_mod.to_dict(cfg), handle)
    try:
        return config_mod.load_config(Stage1Config, handle.name, overrides)
    finally:
        os.unlink(handle.name)


def trainer_has_micro_batch() -> bool:
    from llm2clip.train.stage1_config import Stage1Train

    return "micro_batch" in Stage1Train.__dataclass_fields__


# ------------------------------------------------------------------ driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3, help="training steps per variant")
    parser.add_argument("--quick", action="store_true", help="a tiny random Llama and the --fast demo's data")
    parser.add_argument("--device", default="cpu", help="the demo is a CPU program; only cpu is measured")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.device != "cpu":
        raise SystemExit("bench_demo_memory measures the CPU demo's resident memory: --device cpu")

    from llm2clip.demo import FAST, FULL

    size = FAST if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="bench-demo-memory-"))
    model = None
    if args.quick:
        from llm2clip.testing.random_llm import save_random_llm

        model = str(save_random_llm(work / "tiny-llama", "llama", hidden_size=64, num_layers=2))
    rows, raw = [], {}
    for name in args.variants:
        variant = VARIANTS[name]
        if name == "jemalloc" and not Path(JEMALLOC).is_file():
            print(f"{name}: {JEMALLOC} is not installed (apt-get install libjemalloc2); skipped", file=sys.stderr)
            continue
        if name == "micro-batch-8" and not trainer_has_micro_batch():
            print(f"{name}: this trainer has no train.micro_batch; skipped", file=sys.stderr)
            continue
        spec = {"quick": args.quick, "model": model, "data": str(work / "data"), "out": str(work / f"run-{name}"),
                "steps": args.steps, "pairs": size.stage1_batch, "mallopt": variant["mallopt"],
                "overrides": variant["overrides"]}
        print(f"{name} ...", file=sys.stderr, flush=True)
        result = bc.run_child(__file__, spec, extra_env=variant["env"])
        raw[name] = {**variant, **result}
        steps = result["step_seconds"]
        rows.append([name, result["peak_rss"] / bc.GIB, result["rss_after_imports"] / bc.GIB,
                     bc.median(steps[1:] or steps), result["peak_rss"] < 4 * bc.GIB])
        table = bc.markdown_table(["variant", "peak RSS GiB (VmHWM)", "RSS after imports GiB",
                                   "median step s (after the first)", "< 4 GiB?"], rows)
        # written after every variant: a long run that is stopped keeps what it measured
        bc.write_result("demo_memory", {"steps": args.steps, "pairs_per_step": size.stage1_batch, "variants": raw},
                        table, args.out_dir)


if __name__ == "__main__":
    main()
