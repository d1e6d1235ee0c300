"""Training checkpoints: safetensors + JSON only (no pickle), written atomically.

A checkpoint is a folder `checkpoint-00000120/` holding
  weights.safetensors     the trainable weights
  optimizer.safetensors   the optimizer's per-parameter tensors (param_groups in state.json)
  rng-rank{r}.safetensors each rank's torch RNG state (dropout must replay after resume)
  state.json              step, metadata; written last — its presence marks completeness
It is built in a hidden temporary folder and renamed into place, so a kill never leaves
a half-written checkpoint under the real name. Loading skips (and reports) checkpoints that
are incomplete or corrupt and falls back to the previous good one.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import distributed as dist_utils
from ..atomic_file import WriteError, atomic_write_text

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


# ---------------------------------------------------------------- optimizer state
def optimizer_to_tensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- save
def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int = 2,
) -> Path | None:
    """Write checkpoint `step` under `root` (all ranks call this; rank 0 writes the shared
    files, every rank its RNG state). Returns the final path on rank 0."""
    root = Path(root)
    final = root / checkpoint_name(step)
    staging = root / f".{checkpoint_name(step)}.tmp"
    if dist_utils.rank() == 0:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    dist_utils.barrier()
    try:
        save_file({"cpu": torch.get_rng_state()} | _cuda_rng(), str(staging / f"rng-rank{dist_utils.rank()}.safetensors"))
        if dist_utils.rank() == 0:
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(staging / "weights.safetensors"))
            opt_tensors, opt_meta = optimizer_to_tensors(optimizer_state)
            save_file(opt_tensors, str(staging / "optimizer.safetensors"))
    except (OSError, SafetensorError) as err:  # e.g. disk full: the finished checkpoints stay as they are
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(f"could not write checkpoint {final} ({err}); the previous checkpoints are untouched, "
                         "free space and rerun with --resume") from err
    dist_utils.barrier()
    if dist_utils.rank() != 0:
        dist_utils.barrier()
        return None
    state = {"step": step, "world_size": dist_utils.world_size(), "optimizer": opt_meta, **meta}
    _write_json(staging / "state.json", state)
    if final.exists():  # re-saving the same step after a resume: replace it
        shutil.rmtree(final)
    os.replace(staging, final)
    _prune(root, keep)
    dist_utils.barrier()
    return final


def _cuda_rng() -> dict[str, torch.Tensor]:
    return {"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def _prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- load
def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Finished checkpoint folders under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def load_latest(root: str | os.PathLike) -> dict[str, Any] | None:
    """The newest checkpoint that loads completely, or None. Corrupt ones are reported."""
    for path in reversed(list_checkpoints(root)):
        try:
            return load_checkpoint(path)
        except (OSError, ValueError, KeyError, SafetensorError) as err:
            log.warning("checkpoint %s is unusable (%s); trying the previous one", path, err)
    return None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise ValueError("state.json missing (incomplete write)")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    weights = load_file(str(path / "weights.safetensors"))
    optimizer = optimizer_from_tensors(load_file(str(path / "optimizer.safetensors")), state.pop("optimizer"))
    rng_file = path / f"rng-rank{dist_utils.rank()}.safetensors"
    rng = load_file(str(rng_file)) if rng_file.is_file() else None
    return {"path": path, "weights": weights, "optimizer": optimizer, "rng": rng, **state}


def restore_rng(rng: dict[str, torch.Tensor] | None) -> None:
    if rng is None:
        return
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
