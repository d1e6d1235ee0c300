"""Worker for tests/test_distributed_loss.py, launched by torchrun with 2 gloo/CPU ranks.

For each split of a fixed global batch across the ranks (even 4+4, uneven 5+3) and each
loss, train one step of a tiny DDP model on this rank's rows, the loss gathering the
other ranks' features with gradient. Rank 0 writes the initial parameters, the loss on
every rank and the DDP-averaged parameter gradients to OUT_DIR/result.safetensors; the
test recomputes them in one process on the whole batch.

The shared definitions (batch, model, forward) live here and are imported by the test,
so both sides run the very same model code.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

IN_DIM, EMBED_DIM, GLOBAL_BATCH = 6, 4, 8
SPLITS = {"even": (4, 4), "uneven": (5, 3)}
LOSSES = ("simcse", "clip", "siglip")


class TinyModel(nn.Module):
    """Two linear towers with CLIP's learnable temperature and SigLIP's bias.

    Each loss uses a different subset: simcse the text tower only (for both sides and the
    hard negatives), clip both towers and the scale, siglip everything.
    """

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(IN_DIM, EMBED_DIM)
        self.text = nn.Linear(IN_DIM, EMBED_DIM)
        self.log_scale = nn.Parameter(torch.tensor(2.5))
        self.bias = nn.Parameter(torch.tensor(-1.0))

    def forward(self, loss_name: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from llm2clip.losses import clip_loss, siglip_loss, simcse_loss

        if loss_name == "simcse":
            # One forward over all three inputs: a and b are two views, neg hard negatives.
            n = batch["a"].shape[0]
            z = F.normalize(self.text(torch.cat([batch["a"], batch["b"], batch["neg"]])), dim=-1)
            return simcse_loss(z[:n], z[n : 2 * n], temperature=0.1, negatives=z[2 * n :])
        image = F.normalize(self.image(batch["image"]), dim=-1)
        text = F.normalize(self.text(batch["text"]), dim=-1)
        if loss_name == "clip":
            return clip_loss(image, text, self.log_scale.exp())
        return siglip_loss(image, text, self.log_scale.exp(), self.bias)


_TOWERS = {"image.weight", "image.bias", "text.weight", "text.bias"}
USED_PARAMETERS = {
    "simcse": {"text.weight", "text.bias"},
    "clip": _TOWERS | {"log_scale"},
    "siglip": _TOWERS | {"log_scale", "bias"},
}


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {k: torch.randn(GLOBAL_BATCH, IN_DIM, generator=g) for k in ("a", "b", "neg", "image", "text")}


def initial_model(loss_name: str) -> TinyModel:
    torch.manual_seed(0)
    model = TinyModel()
    # Freeze what this loss does not use: DDP expects a gradient for every trainable parameter.
    for name, p in model.named_parameters():
        p.requires_grad_(name in USED_PARAMETERS[loss_name])
    return model


def rows_of_rank(split: str, rank: int) -> slice:
    sizes = SPLITS[split]
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def run_case(split: str, loss_name: str, rank: int, out: dict[str, torch.Tensor]) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from llm2clip.distributed import gather_no_grad

    model = initial_model(loss_name)
    for name, p in model.named_parameters():
        out[f"{split}/{loss_name}/init/{name}"] = p.detach().clone()
    ddp = DDP(model)
    local = {k: v[rows_of_rank(split, rank)] for k, v in global_batch().items()}
    loss = ddp(loss_name, local)
    loss.backward()
    out[f"{split}/{loss_name}/loss_per_rank"] = gather_no_grad(loss.detach().reshape(1))
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[f"{split}/{loss_name}/grad/{name}"] = p.grad.detach().clone()


def main(out_dir: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    assert dist.get_world_size() == 2
    out: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        for loss_name in LOSSES:
            run_case(split, loss_name, rank, out)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in out.items()}, str(Path(out_dir) / "result.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
