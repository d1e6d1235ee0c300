"""What starts a training run of either stage: the Accelerator, logging set-up, the output folder."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import config as config_mod
from .. import distributed as dist_utils
from ..atomic_file import atomic_write_text
from ..choices import PRECISIONS
from ..devices import resolve_device
from ..output_paths import require_writable_folder
from .checkpoint import list_checkpoints
from .run_folder import record_start, set_earlier_run_aside

log = logging.getLogger("llm2clip")


class TrainingError(RuntimeError):
    """A run that cannot go on (non-finite loss, inconsistent resume, ...)."""


def make_accelerator(precision: str, device: str):
    """One Accelerator for CPU, one GPU, or many (torchrun / accelerate launch)."""
    from accelerate import Accelerator

    cpu = resolve_device(device, "train.device") == "cpu"
    if precision not in PRECISIONS:
        raise config_mod.ConfigError(f"train.precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        mixed = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
    else:
        mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    return Accelerator(cpu=cpu, mixed_precision=mixed)


def compute_precision(accelerator) -> str:
    """What the run computes in ("fp32", "bf16" or "fp16"), train.precision's auto resolved."""
    return {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[str(accelerator.mixed_precision)]


def setup_logging(main_process: bool) -> None:
    level = logging.INFO if main_process else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def prepare_output(output_dir: str, cfg: Any, resume: bool, main_process: bool,
                   config_file: str | os.PathLike | None = None) -> Path:
    """Create the run folder and save its config; refuse to silently mix two runs.

    Resuming requires the same config except the keys that only affect how long it runs
    (and train.fsdp: a run with FSDP resumes one without, and back).
    A fresh start sets an earlier run's outputs aside (run_folder.py); every start is
    recorded in run-history.jsonl as fresh or a resume.
    `config_file`, the YAML the user passed, is never overwritten, even when it is the run
    folder's own config.yaml.
    """
    out = Path(output_dir)
    if main_process:
        require_writable_folder(out, "train.output_dir")
    saved_file = out / "config.yaml"
    current = config_mod.to_dict(cfg)
    if list_checkpoints(out / "checkpoints") and not resume:
        raise TrainingError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                            f"or choose another train.output_dir")
    users_file = bool(config_file) and saved_file.is_file() and os.path.samefile(config_file, saved_file)
    if users_file and not resume:
        raise config_mod.ConfigError(f"{config_file} is the config you passed, and also the record of the run's "
                                     f"settings that train.output_dir={output_dir} gets; move your config out of "
                                     "the run folder or choose another train.output_dir")
    if resume and saved_file.is_file():
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
        # train.fsdp changes how the model is spread, not what it computes: its checkpoints are full
        changed = _diff(saved, current, ignore={"train.max_steps", "train.epochs", "train.save_every",
                                                "train.keep_checkpoints", "train.fsdp", "eval"})
        if changed:
            raise TrainingError(f"cannot resume {out}: the config differs in {', '.join(changed)}")
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        record_start(out, resume, None if resume else set_earlier_run_aside(out))
        if not users_file:  # resuming with the run's own record as --config: it holds these settings
            atomic_write_text(saved_file, yaml.safe_dump(current, sort_keys=False))
    dist_utils.barrier()  # no rank writes its logs before an earlier run's are set aside
    return out


def _diff(a: Any, b: Any, ignore: set[str], prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys if f"{prefix}{k}" not in ignore
                for d in _diff(a.get(k), b.get(k), ignore, f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
