"""FSDP for the LLM: torch's own `fully_shard` (FSDP2), which runs on a CPU device mesh over
gloo as well as on GPUs over NCCL.

Why not accelerate's FSDP plugin: it refuses to start without a GPU, so nothing in it could
be tested here; accelerate stays the DDP path (`train.fsdp: false`).

What `train.fsdp: true` does:
- every decoder layer of the LLM (the classes its `_no_split_modules` names) becomes one
  FSDP unit, and the training module around it the root unit (the embeddings, the final
  norm and, in stage 2, the vision tower and adaptor), so each rank holds 1/W of every
  weight and all-gathers one layer at a time; scalar parameters (stage 2's logit scale and
  bias), which `fully_shard` cannot cut, stay whole on every rank, their gradients averaged
  over ranks by a hook as DDP averages them (our losses give every rank the global batch's
  loss, so these gradients agree already; the average keeps the ranks' copies equal for any
  objective);
- gradients are reduce-scattered and averaged over ranks, as DDP averages them, so the
  losses' cross-rank gather (distributed.py: each rank gets W x its rows' gradient) gives
  the single-process gradient of the global batch;
- `precision: bf16` computes in bf16 (`MixedPrecisionPolicy`) and reduces gradients in fp32;
- checkpoints gather every trainable weight and optimizer tensor to full size, so rank 0
  writes exactly the files a run without FSDP writes (and either kind of run resumes from
  either kind of checkpoint); resuming cuts the full tensors back into this rank's shards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from .. import distributed as dist_utils

_COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's decoder layers: modules of the classes the model itself names as never to
    be split across devices (`_no_split_modules`, what HF's device maps and FSDP auto-wrap use)."""
    names = set(getattr(llm, "_no_split_modules", None) or [])
    layers = [m for m in llm.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(llm).__name__} names no decoder-layer class (_no_split_modules); "
                         "train.fsdp cannot find the layers to shard")
    return layers


def shard(root: nn.Module, llm: nn.Module, precision: str) -> nn.Module:
    """Shard `root` (the module whose forward training calls) with one FSDP unit per decoder
    layer of `llm` (a submodule of root) and one for the rest. In place; returns `root`.

    Needs an initialised process group (torchrun); one process is a mesh of one.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist_utils.is_distributed():
        raise RuntimeError("train.fsdp needs torch.distributed: launch with torchrun")
    if precision not in _COMPUTE_DTYPES:
        raise ValueError(f"train.fsdp supports train.precision fp32 or bf16, got {precision!r}")
    device = next(root.parameters()).device
    mesh = init_device_mesh(device.type, (dist_utils.world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=_COMPUTE_DTYPES[precision], reduce_dtype=torch.float32)
    for layer in decoder_layers(llm):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    scalars = {p for p in root.parameters() if p.ndim == 0}
    fully_shard(root, mesh=mesh, mp_policy=policy, ignored_params=scalars)
    for param in scalars:
        if param.requires_grad:
            param.register_post_accumulate_grad_hook(_average_over_ranks)
    return root


def _average_over_ranks(param: nn.Parameter) -> None:
    """The gradient's mean over ranks, after each backward. With gradient accumulation the
    earlier micro-steps' part is already the same on every rank, so averaging it again keeps it."""
    import torch.distributed as dist

    dist.all_reduce(param.grad)
    param.grad.div_(dist_utils.world_size())


def shard_with_groups(root: nn.Module, llm: nn.Module, precision: str, param_groups: list[dict]) -> list[dict]:
    """`shard` root, and return `param_groups` (the optimizer's, built on the unsharded model)
    pointing at the sharded parameters: sharding replaces every parameter object, and an
    optimizer holding the old ones would update weights the model no longer uses."""
    names = {id(p): name for name, p in root.named_parameters()}
    missing = [p for group in param_groups for p in group["params"] if id(p) not in names]
    if missing:
        raise ValueError(f"{len(missing)} optimizer parameters are not in the module train.fsdp shards")
    shard(root, llm, precision)
    sharded = dict(root.named_parameters())
    return [{**group, "params": [sharded[names[id(p)]] for p in group["params"]]} for group in param_groups]


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


@contextmanager
def no_gradient_sync(module: nn.Module, skip: bool) -> Iterator[None]:
    """FSDP's `no_sync`: while `skip`, backward keeps unsharded gradients and does not
    reduce-scatter (gradient accumulation's inner micro-steps)."""
    if skip:
        module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        if skip:
            module.set_requires_gradient_sync(True)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """torch's clip over sharded gradients (and the whole ones of scalar parameters); the norm
    is of the full (global) gradient. Returns it, before clipping."""
    from torch.distributed.tensor import DTensor

    kinds = [[p for p in params if isinstance(p, DTensor) == sharded] for sharded in (True, False)]
    kinds = [kind for kind in kinds if any(p.grad is not None for p in kind)]
    norms = [_full(torch.nn.utils.get_total_norm([p.grad for p in kind if p.grad is not None])) for kind in kinds]
    total = torch.linalg.vector_norm(torch.stack(norms))
    for kind in kinds:  # torch cannot scale DTensors and plain tensors in one call
        torch.nn.utils.clip_grads_with_norm_(kind, max_norm, total)
    return float(total)


# ---------------------------------------------------------------- full state for checkpoints
def _full(value: Any) -> Any:
    """A DTensor's full tensor (a collective: every rank must call it in the same order);
    anything else unchanged."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def full_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each (possibly sharded) tensor at full size, on the CPU, on rank 0 only (an empty dict
    elsewhere). Gathered one tensor at a time, so no rank ever holds more than one full weight
    it does not keep. A plain CPU tensor comes back as itself (not copied): the checkpoint
    writer reads it at once, and a run without FSDP keeps its memory as before."""
    out: dict[str, torch.Tensor] = {}
    for name in sorted(weights):
        full = _full(weights[name].detach())
        if dist_utils.rank() == 0:
            out[name] = full.cpu()
    return out


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` with every sharded state tensor gathered to full size: the
    state dict a run without FSDP has (keyed by parameter index), complete on rank 0."""
    state_dict = optimizer.state_dict()
    state = {}
    for index in sorted(state_dict["state"]):
        entry = {}
        for key in sorted(state_dict["state"][index]):
            value = _full(state_dict["state"][index][key])
            entry[key] = value.cpu() if torch.is_tensor(value) else value
        state[index] = entry
    return {"state": state if dist_utils.rank() == 0 else {}, "param_groups": state_dict["param_groups"]}


def _like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`full` cut the way `target` is sharded (this rank's piece), or as is when `target` is a
    plain tensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(target, DTensor):
        return distribute_tensor(full.to(target.dtype), target.device_mesh, target.placements)
    return full.to(target.dtype)


def load_full_weights(params: dict[str, nn.Parameter], weights: dict[str, torch.Tensor]) -> None:
    """Copy full-size `weights` into (possibly sharded) parameters of the same names."""
    missing = set(weights) ^ set(params)
    if missing:
        raise ValueError(f"the checkpoint does not match the model: {sorted(missing)[:5]}")
    with torch.no_grad():
        for name in sorted(weights):
            params[name].copy_(_like(weights[name], params[name]))


def shard_optimizer_state(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """A full (index-keyed) optimizer state dict made to match this optimizer's sharded
    parameters: per-parameter tensors of the parameter's shape become its shards; scalars
    (AdamW's `step`) stay as they are. Pass the result to `optimizer.load_state_dict`."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {}
    for index, entry in state_dict["state"].items():
        param = params[int(index)]
        state[int(index)] = {key: _like(value, param) if torch.is_tensor(value) and value.shape == param.shape else value
                             for key, value in entry.items()}
    return {"state": state, "param_groups": state_dict["param_groups"]}
