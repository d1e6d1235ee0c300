"""Stage 2: step time per sample and the largest batch in a memory budget, offline vs
online_frozen vs online_lora (paper Table 11: the store makes stage 2 cheap).

    python benchmarks/bench_stage2_step.py                       # SmolLM2-135M and a random 1024x16 Llama
    python benchmarks/bench_stage2_step.py --quick               # tiny random models, seconds
    python benchmarks/bench_stage2_step.py --llm random:1024x16 --batch 8 --budget-gib 4

Every step is the trainer's own: `Stage2Objective` forward (online modes tokenise the
captions and run the caption encoder in the loop, as `train_stage2` does), backward,
gradient clipping, AdamW step on `param_groups(cfg, ...)`, logit-scale clamp. The three
modes share the vision tower kind, the caption encoder (a stage-1-style LoRA encoder,
paper r=16 on all projections; frozen for online_frozen) and the captions (the demo's
short and dense captions at 50 % each, as the paper samples real/dense). Pixels are
random tensors of the tower's input shape (the loader is bench_loader.py's subject).

Step times: all modes in one process, interleaved A,B,C,A,B,C; medians.
Batch in budget: per mode, a fresh subprocess per probe runs two steps and reports its
peak memory; batch sizes double until the budget is exceeded, then bisect.

GradCache (`train.micro_batch`, train/grad_cache.py): `--micro-batch M` also times each mode
with its batch embedded in pieces of M samples (the loop's own `grad_cache_step`), next to
the plain step, and `--memory-micro-batch 0 M` searches the largest batch without and with.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import bench_common as bc
import torch

MODES = ("offline", "online_frozen", "online_lora")
CAPTION_FIELDS = ("short", "dense")  # real and dense at 50 % (paper Table 7)


# ------------------------------------------------------------------ one mode's training step
class Stage2Step:
    """One mode's model, objective, optimizer and a fixed batch; `step()` is one update."""

    def __init__(self, mode: str, llm: str, vision: str, batch: int, device: torch.device, encoder=None, dim=None,
                 checkpointing: bool = False, micro_batch: int = 0):
        from llm2clip.train.optim import build_adamw
        from llm2clip.train.stage2 import build_model, param_groups
        from llm2clip.train.stage2_config import Stage2Config
        from llm2clip.train.stage2_objective import Stage2Objective

        cfg = Stage2Config()
        cfg.model.vision, cfg.model.caption_encoder, cfg.train.mode = vision, llm, mode
        cfg.model.gradient_checkpointing = checkpointing  # the vision tower's (a config option)
        online = mode != "offline"
        store = None if online else SimpleNamespace(dim=dim or encoder.dim)
        torch.manual_seed(0)
        self.model = build_model(cfg, encoder if online else None, store).to(device)
        self.objective = Stage2Objective(self.model, "clip", encoder if online else None,
                                         train_encoder=mode == "online_lora")
        groups = param_groups(cfg, self.model, encoder if online else None)
        self.optimizer = build_adamw(groups, cfg.train.lr_vision, cfg.train.weight_decay_vision)
        self.trainable = [p for g in groups for p in g["params"]]
        self.device, self.mode, self.encoder = device, mode, encoder
        self.pieces = max(1, batch // micro_batch) if micro_batch else 0
        from PIL import Image

        shape = self.model.vision.preprocess([Image.new("RGB", (256, 256))]).shape[1:]
        self.pixels = torch.randn(batch, *shape)
        self.texts = (bc.emoji_captions((batch + 1) // 2, CAPTION_FIELDS))[:batch]
        self.text_embeddings = torch.nn.functional.normalize(torch.randn(batch, store.dim), dim=-1) if store else None

    def inputs(self) -> dict:
        inputs = {"pixels": self.pixels.to(self.device)}
        if self.text_embeddings is not None:  # offline: the loader hands over stored embeddings
            inputs["text_embeddings"] = self.text_embeddings.to(self.device)
        else:  # online: tokenised in the loop, as train_stage2's _inputs does
            inputs["text_batch"] = {k: v.to(self.device) for k, v in self.encoder.tokenize(self.texts).items()}
        return inputs

    def step(self) -> float:
        self.objective.train()  # as _train_loop: train mode, but a frozen encoder in eval mode
        if self.encoder is not None and self.mode != "online_lora":
            self.encoder.eval()  # (the modes share one encoder object, so set it every step)
        if self.pieces:  # GradCache, as the training loop runs it with train.micro_batch
            from llm2clip.train.grad_cache import grad_cache_step

            result = grad_cache_step(self.objective, self.inputs(), self.pieces)
        else:
            result = self.objective(**self.inputs())
            result["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 5.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.clamp_logit_scale()
        return result["loss"].item()


def load_encoder(llm: str, device: torch.device, checkpointing: bool = False):
    from llm2clip.text import CaptionEncoder

    encoder = CaptionEncoder.from_pretrained(llm, lora=True, precision="fp32", device=device)
    if checkpointing:  # only matters for online_lora: the frozen modes keep no LLM activations
        encoder.gradient_checkpointing_enable()
    encoder.requires_grad_(False)
    for name, param in encoder.named_parameters():  # as train_stage2's load_text_side does
        param.requires_grad_("lora_" in name)
    return encoder


def llm_dim(llm: str) -> int:
    from transformers import AutoConfig

    from llm2clip.text.model_names import resolve_llm

    return int(AutoConfig.from_pretrained(resolve_llm(llm)).hidden_size)


# ------------------------------------------------------------------ child: memory of one (mode, batch)
def child(spec: dict) -> None:
    device = bc.pick_device(spec["device"])
    if spec.get("timing"):
        return bc.report_child(time_modes(spec, device))
    memory = bc.PeakMemory(device)
    online = spec["mode"] != "offline"
    checkpointing = spec.get("checkpointing", False)
    encoder = load_encoder(spec["llm"], device, checkpointing) if online else None  # offline never loads the LLM
    runner = Stage2Step(spec["mode"], spec["llm"], spec["vision"], spec["batch"], device, encoder,
                        dim=None if online else llm_dim(spec["llm"]), checkpointing=checkpointing,
                        micro_batch=spec.get("micro_batch", 0))
    for _ in range(spec.get("steps", 2)):  # the second step holds the optimizer state too
        runner.step()
    bc.report_child({"peak_bytes": memory.peak(), "memory_kind": memory.kind})


def peak_of(args, llm: str, mode: str, batch: int, micro_batch: int = 0) -> int:
    spec = {"mode": mode, "llm": llm, "vision": args.vision, "batch": batch, "device": args.device,
            "checkpointing": args.checkpointing == "on", "steps": args.probe_steps, "micro_batch": micro_batch}
    # glibc raises its mmap threshold after each large free, so later large tensors come from
    # the heap and freed ones stay resident: peak RSS then measures the allocator's retention
    # (it made gradient checkpointing look ~4x less effective than it is); a fixed threshold
    # returns every large block to the OS, so RSS follows live tensors
    env = {"MALLOC_MMAP_THRESHOLD_": str(args.malloc_mmap_threshold)} if args.malloc_mmap_threshold else None
    return bc.run_child(__file__, spec, extra_env=env)["peak_bytes"]


def largest_batch(args, llm: str, mode: str, micro_batch: int = 0) -> tuple[int, dict[int, int]]:
    """Double until the budget is exceeded (or --max-batch), then bisect; (batch, probes).
    The search starts at --start-batch when given (a probe that fits at --max-batch proves
    "at least"), else at the micro-batch (a smaller batch is one piece), else at 1."""
    budget = args.budget_gib * bc.GIB
    probes: dict[int, int] = {}

    def fits(batch: int) -> bool:
        probes[batch] = peak_of(args, llm, mode, batch, micro_batch)
        print(f"  {mode} micro {micro_batch or '-'} batch {batch}: {probes[batch] / bc.GIB:.2f} GiB",
              file=sys.stderr, flush=True)
        return probes[batch] <= budget

    good, bad = 0, None
    batch = args.start_batch or micro_batch or 1
    while batch <= args.max_batch:
        if not fits(batch):
            bad = batch
            break
        good, batch = batch, batch * 2
    if bad is None:
        return good, probes  # capped: the true figure is at least this
    while bad - good > max(1, good // 16):  # bisect to within ~6 %
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good, probes


# ------------------------------------------------------------------ parent
def time_modes(spec: dict, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each mode, interleaved, all in this process (a child, so the
    parent stays small while it runs the memory probes)."""
    encoder = load_encoder(spec["llm"], device)
    runners = {mode: Stage2Step(mode, spec["llm"], spec["vision"], spec["batch"], device, encoder) for mode in MODES}
    for mode in MODES if spec.get("micro_batch") else ():
        runners[f"{mode}+micro"] = Stage2Step(mode, spec["llm"], spec["vision"], spec["batch"], device, encoder,
                                              micro_batch=spec["micro_batch"])
    return bc.interleaved({m: r.step for m, r in runners.items()}, spec["repeats"], device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", nargs="*", default=["smollm2-135m", "random:1024x16"],
                        help="caption encoders to time: embedded name, folder, or random:HIDDENxLAYERS")
    parser.add_argument("--vision", default="efficientnet-lite0")
    parser.add_argument("--batch", type=int, default=8, help="samples per step for the time comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=0,
                        help="also time each mode with GradCache pieces of this many samples (0: do not)")
    parser.add_argument("--memory-micro-batch", type=int, nargs="+", default=[0],
                        help="micro-batch sizes to search the largest batch with (0: the plain step)")
    parser.add_argument("--budget-gib", type=float, default=4.0)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--start-batch", type=int, default=0,
                        help="first batch the memory search probes (0: the micro-batch, or 1); "
                             "--start-batch N --max-batch N probes N alone")
    parser.add_argument("--memory-llm", nargs="*", default=None,
                        help="encoders to run the batch-in-budget search for (default: the last --llm)")
    parser.add_argument("--memory-modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--probe-steps", type=int, default=2, help="training steps per memory probe")
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on",
                        help="gradient checkpointing (vision tower; LLM in online_lora) in the memory search")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=131072,
                        help="glibc MALLOC_MMAP_THRESHOLD_ for the CPU memory probes (0: glibc's dynamic default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny random models, small sizes (a smoke test)")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--result-name", default="stage2_step",
                        help="results/<name>.json (so a memory-only run does not replace the timing run's file)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.quick:
        args.llm, args.batch, args.repeats = ["random:64x2"], 2, 1
        args.budget_gib, args.max_batch = min(args.budget_gib, 0.5), 4
        args.micro_batch = 1  # the GradCache step too, in pieces of one sample
    root = Path(tempfile.mkdtemp(prefix="bench-stage2-"))
    device = bc.pick_device(args.device)
    llms = {name: bc.tiny_or_named_llm(name, root) for name in args.llm}
    memory_llms = args.memory_llm if args.memory_llm is not None else args.llm[-1:]
    for name in memory_llms:
        llms.setdefault(name, bc.tiny_or_named_llm(name, root))

    result: dict = {"batch": args.batch, "vision": args.vision, "device": str(device), "configs": {}}
    rows, micro_rows, table = [], [], ""
    for name in args.llm:
        times = bc.run_child(__file__, {"timing": True, "llm": llms[name], "vision": args.vision,
                                        "batch": args.batch, "repeats": args.repeats, "device": args.device,
                                        "micro_batch": args.micro_batch})
        per_sample = {m: bc.median(t) / args.batch for m, t in times.items()}
        result["configs"][name] = {"step_seconds": times, "seconds_per_sample": per_sample}
        off = per_sample["offline"]
        rows.append([name, f"{off * 1e3:.1f}", f"{per_sample['online_frozen'] * 1e3:.1f}",
                     f"{per_sample['online_lora'] * 1e3:.1f}", f"{per_sample['online_frozen'] / off:.2f}×",
                     per_sample["online_frozen"] / off >= 4, f"{per_sample['online_lora'] / off:.2f}×",
                     per_sample["online_lora"] / off >= 10])
        for mode in MODES if args.micro_batch else ():
            micro = per_sample[f"{mode}+micro"]
            micro_rows.append([name, mode, f"{per_sample[mode] * 1e3:.1f}", f"{micro * 1e3:.1f}",
                               f"{micro / per_sample[mode]:.2f}×", micro / per_sample[mode] <= 1.4])
    if rows:
        table = bc.markdown_table(
            ["caption encoder", "offline ms/sample", "online_frozen ms/sample", "online_lora ms/sample",
             "frozen/offline", "≥ 4×?", "lora/offline", "≥ 10×?"], rows)
        table += f"\n\nvision tower {args.vision}, batch {args.batch}, medians of {args.repeats} interleaved steps.\n\n"
    if micro_rows:
        table += bc.markdown_table(["caption encoder", "mode", "plain ms/sample",
                                    f"micro-batch {args.micro_batch} ms/sample", "micro / plain", "≤ 1.4×?"],
                                   micro_rows)
        table += "\n\n"

    mem_rows = []
    for name in memory_llms:
        found = {}
        for mode in args.memory_modes:
            for micro in args.memory_micro_batch:
                batch, probes = largest_batch(args, llms[name], mode, micro)
                found[f"{mode}+micro{micro}" if micro else mode] = {
                    "mode": mode, "micro_batch": micro, "largest_batch": batch, "capped": batch >= args.max_batch,
                    "peak_bytes_by_batch": probes}
        result["configs"].setdefault(name, {})["memory"] = found
        off = found.get("offline", {}).get("largest_batch")
        for key, row in found.items():
            b = row["largest_batch"]
            peak = row["peak_bytes_by_batch"].get(b)
            ratio = off / b if b and off else float("inf")
            plain = key == "offline" or row["micro_batch"]
            mem_rows.append([name, row["mode"], row["micro_batch"] or "-", f"{b}{'+' if row['capped'] else ''}",
                             f"{peak / bc.GIB:.2f}" if peak is not None else "-",
                             "-" if plain else f"{ratio:.1f}×", "-" if plain else ratio >= 10])
    if mem_rows:
        table += bc.markdown_table(
            ["caption encoder", "mode", "micro-batch", f"largest batch ≤ {args.budget_gib:g} GiB", "peak GiB at it",
             "offline / this", "≥ 10×?"], mem_rows)
        kind = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS - RSS after imports"
        malloc = (f", MALLOC_MMAP_THRESHOLD_={args.malloc_mmap_threshold}"
                  if args.malloc_mmap_threshold and device.type == "cpu" else "")
        table += (f"\n\nmemory: {kind}{malloc}, gradient checkpointing {args.checkpointing}, {args.probe_steps} "
                  "step(s) per probe, fresh subprocess per probe; '+' = hit --max-batch.")
    result["budget_gib"] = args.budget_gib
    result["malloc_mmap_threshold"] = args.malloc_mmap_threshold
    bc.write_result(args.result_name, result, table, args.out_dir)


if __name__ == "__main__":
    main()
