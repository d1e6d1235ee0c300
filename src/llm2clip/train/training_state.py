"""Save and restore what a run needs to continue exactly: trainable weights, optimizer,
lr schedule, RNG, and the step (both stages use this)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_latest, restore_rng, save_checkpoint
from .metrics_log import MetricsLog

log = logging.getLogger("llm2clip.train")


def trainable_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def save_training_state(out: Path, step: int, module: nn.Module, optimizer, scheduler, keep: int,
                        meta: dict[str, Any] | None = None) -> None:
    meta = {"scheduler": scheduler.state_dict(), **(meta or {})}
    save_checkpoint(out / "checkpoints", step, trainable_weights(module), optimizer.state_dict(), meta, keep=keep)


def restore_training_state(out: Path, module: nn.Module, optimizer, scheduler,
                           logs: list[MetricsLog]) -> tuple[int, dict[str, Any]]:
    """Load the newest good checkpoint into module/optimizer/scheduler/RNG; cut the logs
    back to its step (to nothing without one). Returns (step, the checkpoint's state) —
    (0, {}) without one."""
    state = load_latest(out / "checkpoints")
    if state is None:
        log.info("no usable checkpoint in %s: starting from step 0", out / "checkpoints")
        for metrics in logs:  # nothing to continue: the logs restart with the run
            metrics.truncate_after(-1)
        return 0, {}
    params = trainable_weights(module)
    mismatch = set(state["weights"]) ^ set(params)
    if mismatch:
        raise ValueError(f"checkpoint {state['path']} does not match the model: {sorted(mismatch)[:5]}")
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"])
    for metrics in logs:
        metrics.truncate_after(state["step"])
    log.info("resumed from %s (step %d)", state["path"], state["step"])
    return int(state["step"]), state
