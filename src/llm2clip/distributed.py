"""Small torch.distributed helpers: who am I, and gathering features across ranks.

Everything here degrades to a no-op in a single process, so the losses and the trainers
run the same code on a laptop CPU, one GPU, or many nodes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def _all_gather_uneven(x: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `x`, in rank order; first-dim sizes may differ between ranks.

    all_gather needs equal shapes, so gather the sizes first, pad to the largest, gather,
    and trim each piece back to its true size.
    """
    x = x.contiguous()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return [piece[:n] for piece, n in zip(pieces, sizes)]


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate `x` from all ranks along dim 0; gradients flow back to each rank's own rows.

    Why the backward is an all-reduce SUM: every rank computes the identical global loss on
    the gathered batch, but on each rank the autograd graph only reaches that rank's own
    rows. Summing the gradient of the gathered tensor over ranks gives each rank
    world_size x d(loss)/d(own rows); DDP then averages parameter gradients over ranks,
    which divides that factor out again. Sum-then-average is therefore exactly the
    single-process gradient on the global batch (and it stays right if ranks ever compute
    different losses, e.g. a local-rows-only variant). Gloo has no reduce_scatter, so an
    all-reduce followed by slicing is the portable way to do this.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        pieces = _all_gather_uneven(x)
        sizes = [piece.shape[0] for piece in pieces]
        ctx.start = sum(sizes[: rank()])
        ctx.stop = ctx.start + sizes[rank()]
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce is in place; never touch autograd's buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """[n_r, ...] on each rank -> [sum_r n_r, ...] in rank order, differentiable.

    Returns `x` itself when not running distributed (or with a single rank).
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like `gather_with_grad` but detached: for evaluation and logging."""
    if world_size() == 1:
        return x.detach()
    return torch.cat(_all_gather_uneven(x.detach()), dim=0)


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()
