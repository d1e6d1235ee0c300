"""Feature-cache accumulation (GradCache, Gao et al. 2021): contrastive batches beyond memory.

A contrastive loss couples every row of the batch with every other, so the batch cannot be
cut into micro-batches whose gradients simply add up. GradCache cuts the work, not the loss:
  1. each micro-batch is embedded without a graph (only one micro-batch's activations live);
  2. the loss of the whole batch, gathered across ranks as always, is computed on those
     embeddings and back-propagated to them: the gradient of every embedding;
  3. each micro-batch is embedded again, with its graph, and the cached gradients of its
     rows are back-propagated through it.
The result is the un-split batch's loss and gradients, for one extra forward. Dropout
(LoRA's too) draws the same masks in 1 and 3: the RNG state is saved before each
micro-batch's first pass and restored before its second.

An objective takes part through four methods (Stage1Objective, Stage2Objective):
`split(inputs, n)` -> n micro-batches; `embed(chunk)` -> its rows' representations (a list
of tensors); `contrast(embeddings, inputs)` -> the whole batch's outputs ({"loss": ...});
`chunk_terms(chunk, inputs)` -> terms that add up over micro-batches (MNTP), with a graph.
"""
from __future__ import annotations

import torch

from .. import distributed as dist_utils


def split_rows(inputs: dict, pieces: int) -> list[dict]:
    """`inputs` cut into `pieces` consecutive micro-batches of rows (fewer when there are fewer
    rows): every tensor along dim 0, nested dicts alike; other values (None, counts) as they are."""
    rows = _rows(inputs)
    pieces = max(1, min(pieces, rows))

    def cut(value, i):
        if torch.is_tensor(value):
            return torch.tensor_split(value, pieces)[i]
        if isinstance(value, dict):
            return {key: cut(v, i) for key, v in value.items()}
        return value

    return [{key: cut(value, i) for key, value in inputs.items()} for i in range(pieces)]


def _rows(inputs: dict) -> int:
    for value in inputs.values():
        if torch.is_tensor(value):
            return value.shape[0]
        if isinstance(value, dict) and value:
            return _rows(value)
    raise ValueError("a batch without tensors cannot be split")


def rng_state() -> dict[str, torch.Tensor | list[torch.Tensor]]:
    state: dict = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def grad_cache_step(objective, inputs: dict, micro_batches: int, divisor: int = 1) -> dict[str, torch.Tensor]:
    """Back-propagate the whole batch's loss / `divisor` (grad_accum) in `micro_batches`
    pieces; returns the batch's outputs (detached), as objective(**inputs) gives them."""
    chunks = objective.split(inputs, micro_batches)
    states, pieces = [], []
    with torch.no_grad():  # pass 1: embeddings only
        for i, chunk in enumerate(chunks):
            chunks[i] = objective.precompute(chunk)
            states.append(rng_state())
            pieces.append(objective.embed(chunks[i]))
    whole = [torch.cat(parts).detach().requires_grad_(True) for parts in zip(*pieces)]
    outputs = objective.contrast(whole, inputs)
    (outputs["loss"] / divisor).backward()  # the embeddings' gradients (and the loss's own parameters')
    cached = [w.grad for w in whole]
    outputs = {key: value.detach() for key, value in outputs.items()}
    start = 0
    for chunk, state, parts in zip(chunks, states, pieces):  # pass 2: each micro-batch with its graph
        rows = parts[0].shape[0]
        set_rng_state(state)
        again = objective.embed(chunk)
        tensors, grads = [], []
        for tensor, grad in zip(again, cached):
            if tensor.requires_grad:  # not a frozen space (a store's or a frozen encoder's embeddings)
                tensors.append(tensor)
                grads.append(grad[start:start + rows])
        for name, term in objective.chunk_terms(chunk, inputs).items():
            if name == "loss":
                tensors.append(term / divisor)
                grads.append(torch.ones_like(term))
            outputs[name] = outputs.get(name, 0.0) + term.detach()
        if tensors:
            torch.autograd.backward(tensors, grads)
        start += rows
    return outputs


def average_gradients(params: list[torch.Tensor]) -> None:
    """What DDP does in its backward, for gradients made outside its forward: the mean over ranks."""
    world = dist_utils.world_size()
    if world == 1:
        return
    import torch.distributed as dist

    for param in params:
        if param.grad is not None:  # every rank ran the same graph: the same parameters have one
            dist.all_reduce(param.grad)
            param.grad.div_(world)
