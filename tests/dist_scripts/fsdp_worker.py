"""Worker for tests/test_fsdp.py: stage 1's objective (a tiny random Llama with LoRA,
SimCSE over the ranks' gathered embeddings) trained a few steps, one way per run:

  single        one process, no torch.distributed (the test imports this module and runs it)
  ddp           torchrun, torch's DistributedDataParallel (what accelerate wraps)
  fsdp          torchrun, train.fsdp's sharding (llm2clip/train/fsdp.py)
  fsdp-resume   torchrun, fsdp: after RESUME_AT steps a checkpoint is written with the
                trainer's own writer, a freshly built sharded model loads it, and training
                goes on to STEPS
  fsdp-bf16     torchrun, fsdp computing in bf16

The runs marked so in RUNS add MNTP to the objective (the layers run twice per step, and
the LM head is tied to the embeddings). Every run sees the same global batch per step (each
rank its own rows of it) and writes, from rank 0, the loss of every step plus the LoRA weights and optimizer state at the end,
gathered to full size, to OUT_DIR/<run>[-mntp].safetensors.

Usage: torchrun --nproc_per_node=2 fsdp_worker.py MODEL_DIR OUT_DIR   (every run of RUNS in turn)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

GLOBAL_PAIRS, STEPS, RESUME_AT = 8, 3, 2
WORDS = "red blue green cat dog bird left right top small big one two three sofa park".split()


def captions(step: int) -> list[tuple[str, str]]:
    """GLOBAL_PAIRS caption pairs for `step`, of different lengths (so padding varies)."""
    g = torch.Generator().manual_seed(1000 + step)
    pairs = []
    for i in range(GLOBAL_PAIRS):
        n = 2 + (i * 3 + step) % 7
        words = [WORDS[j] for j in torch.randint(len(WORDS), (2 * n,), generator=g)]
        pairs.append((" ".join(words[:n]), " ".join(words[n:n + 1 + i % 4])))
    return pairs


def build(model_dir: str, mntp: bool):
    """(objective, encoder), built the same way in every run."""
    from llm2clip.text import CaptionEncoder
    from llm2clip.train.stage1_objective import Stage1Objective

    torch.manual_seed(0)
    encoder = CaptionEncoder.from_pretrained(model_dir, max_length=32, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                                             precision="fp32", lm_head=mntp)
    objective = Stage1Objective(encoder, temperature=0.05, mntp_weight=0.5 if mntp else 0.0)
    return objective, encoder


def make_optimizer(objective, encoder, sharding: str | None = None):
    """AdamW over the trainable weights, grouped on the unsharded model as the trainers do;
    with `sharding` (a precision), the model is sharded and the groups follow it."""
    from llm2clip.train import fsdp
    from llm2clip.train.optim import build_adamw, decay_groups

    groups = decay_groups(encoder.parameters(), 1e-2, 0.01)
    if sharding:
        groups = fsdp.shard_with_groups(objective, encoder.model, sharding, groups)
    return build_adamw(groups, 1e-2, 0.01)


def local_batch(objective, step: int, rank: int, world: int) -> dict:
    from llm2clip.data.pair_schedule import PairExample

    pairs = captions(step)
    share = GLOBAL_PAIRS // world
    mine = [PairExample(anchor=a, positive=b) for a, b in pairs[rank * share:(rank + 1) * share]]
    return objective.make_batch(mine, torch.Generator().manual_seed(step * 10 + rank))


def train_steps(model, objective, optimizer, steps: range, rank: int, world: int) -> list[float]:
    from llm2clip.train import fsdp

    losses = []
    trainable = [p for p in objective.parameters() if p.requires_grad]
    for step in steps:
        out = model(**local_batch(objective, step, rank, world))
        out["loss"].backward()
        if fsdp.is_sharded(model):
            fsdp.clip_grad_norm(trainable, 1.0)
        else:
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out["loss"].item())
    return losses


def lora_weights(encoder) -> dict[str, torch.Tensor]:
    return {name: p for name, p in encoder.named_parameters() if p.requires_grad}


def run(name: str, model_dir: str, out_dir: Path, mntp: bool) -> None:
    """One run, written to OUT_DIR/<name>[-mntp].safetensors; every rank calls it."""
    from llm2clip import distributed as dist_utils
    from llm2clip.train import fsdp
    from llm2clip.train.checkpoint import load_checkpoint, save_checkpoint
    from safetensors.torch import save_file

    rank, world = dist_utils.rank(), dist_utils.world_size()
    objective, encoder = build(model_dir, mntp)
    model = objective
    if name == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(objective)
    sharding = ("bf16" if name == "fsdp-bf16" else "fp32") if name.startswith("fsdp") else None
    optimizer = make_optimizer(objective, encoder, sharding)
    model.train()
    if name == "fsdp-resume":
        losses = train_steps(model, objective, optimizer, range(RESUME_AT), rank, world)
        save_checkpoint(out_dir / "checkpoints", RESUME_AT, fsdp.full_weights(lora_weights(encoder)),
                        fsdp.full_optimizer_state(optimizer), {})
        del model, objective, encoder, optimizer
        objective, encoder = build(model_dir, mntp)  # fresh weights: the checkpoint must set them
        model = objective
        optimizer = make_optimizer(objective, encoder, "fp32")
        model.train()
        state = load_checkpoint(out_dir / "checkpoints" / f"checkpoint-{RESUME_AT:08d}")
        fsdp.load_full_weights(lora_weights(encoder), state["weights"])
        optimizer.load_state_dict(fsdp.shard_optimizer_state(optimizer, state["optimizer"]))
        losses += train_steps(model, objective, optimizer, range(RESUME_AT, STEPS), rank, world)
    else:
        losses = train_steps(model, objective, optimizer, range(STEPS), rank, world)
    weights = fsdp.full_weights(lora_weights(encoder))
    opt = fsdp.full_optimizer_state(optimizer)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"weight/{k}": v for k, v in weights.items()}
        tensors |= {f"optimizer/{i}/{k}": v for i, entry in opt["state"].items() for k, v in entry.items()}
        tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
        save_file(tensors, str(out_dir / f"{name}{'-mntp' if mntp else ''}.safetensors"))
    dist_utils.barrier()


RUNS = [("ddp", False), ("fsdp", False), ("fsdp-resume", False), ("fsdp-bf16", False), ("ddp", True),
        ("fsdp", True)]

if __name__ == "__main__":  # every 2-process run in one launch (each launch costs the imports again)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    for run_name, with_mntp in RUNS:
        run(run_name, sys.argv[1], Path(sys.argv[2]), with_mntp)
    dist.destroy_process_group()
