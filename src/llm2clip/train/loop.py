"""One training loop for both stages.

A stage (stage1.py, stage2.py) gives only what differs (`Stage`): its objective, its
micro-batches, its log row, what its checkpoints hold. The loop does the rest alike for
both: start the run, resume exactly (weights, optimiser, schedule, RNG, logs), and per
optimiser step: micro-batches -> backward -> finite check -> clip/update/schedule -> log
-> checkpoint, on a CPU, one GPU or many processes (DDP syncs on a step's last micro-batch).

With `train.fsdp` the objective is sharded (fsdp.py) before the optimiser is built and is
not given to accelerate; the checkpoints hold full tensors either way, so the files do not
depend on how the run was spread, and `unsharded` gives the main process a whole copy to
save and evaluate.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed as dist_utils
from ..config import ConfigError
from . import fsdp
from .checkpoint import list_checkpoints, load_latest, restore_rng, save_checkpoint
from .grad_cache import average_gradients, grad_cache_step
from .metrics_log import MetricsLog
from .optim import build_adamw, build_schedule
from .run_settings import RunSettings
from .runtime import TrainingError, compute_precision, make_accelerator, prepare_output, setup_logging

log = logging.getLogger("llm2clip.train")


@dataclass
class Run:
    """A started run: its settings, the Accelerator (device, rank, world), its folder and metrics log."""
    settings: RunSettings
    accelerator: Any
    out: Path
    metrics: MetricsLog

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def end(self) -> None:
        dist_utils.barrier()
        self.accelerator.end_training()


def start_run(cfg: Any, resume: bool, config_file: str | None) -> Run:
    """Check the config, make the Accelerator, prepare the run folder, seed."""
    cfg.validate()
    t: RunSettings = cfg.train
    accelerator = make_accelerator(t.precision, t.device)
    if t.fsdp and accelerator.num_processes < 2:
        raise ConfigError(f"train.fsdp shards the LLM across processes, and this run has "
                          f"{accelerator.num_processes}: launch 2 or more with torchrun (or accelerate launch), "
                          "or leave train.fsdp false")
    setup_logging(accelerator.is_main_process)
    out = prepare_output(t.output_dir, cfg, resume, accelerator.is_main_process, config_file)
    torch.manual_seed(t.seed)
    return Run(t, accelerator, out, MetricsLog(out / "metrics.jsonl", enabled=accelerator.is_main_process))


@dataclass
class StepResult:
    """What an optimiser step measured, for the stage's log row."""
    step: int  # optimiser steps done (1-based)
    means: dict[str, float]  # each output of the objective, averaged over the micro-batches
    last: dict[str, float]  # the last micro-batch's outputs
    grad_norm: float | None  # before clipping; None without clipping
    lr: float  # the first parameter group's, after the schedule stepped
    lr_factor: float  # that lr over its initial value
    samples: int  # this rank's samples in the step
    seconds: float


class Stage:
    """What a stage gives the loop (stage1.CaptionPairs, stage2.ImageCaptions)."""
    name: str  # the progress bar's label
    objective: nn.Module  # forward(**inputs) -> {"loss": scalar, ...more scalars to log}
    saved: nn.Module  # whose trainable weights a checkpoint holds
    llm: nn.Module | None = None  # the LLM inside `objective` whose decoder layers train.fsdp shards

    def micro_batch(self, step: int, index: int) -> tuple[dict[str, Any], int]:
        """(the objective's inputs on the device, their sample count) of micro-batch `index`
        (0-based over the run) of optimiser step `step` (0-based)."""
        raise NotImplementedError

    def log_row(self, result: StepResult) -> dict[str, Any]:
        raise NotImplementedError

    def before_first_step(self) -> None:
        """After the objective was put in train mode (e.g. keep frozen parts in eval mode)."""

    def after_update(self) -> None:
        """After each optimiser step (e.g. clamp a parameter)."""

    def checkpoint_meta(self) -> dict[str, Any]:
        return {}


@dataclass
class Training:
    """The loop's state: run, stage, optimiser and schedule, the steps it starts at and ends at."""
    run: Run
    stage: Stage
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps: int
    start: int = 0
    logs: list[MetricsLog] = field(default_factory=list)  # cut back to the checkpoint's step on resume

    @classmethod
    def build(cls, run: Run, stage: Stage, param_groups: list[dict], lr: float, weight_decay: float,
              steps: int, logs: tuple[MetricsLog, ...] = ()) -> Training:
        if run.settings.fsdp:  # before the optimiser: sharding replaces every parameter
            stage.objective.to(run.accelerator.device)  # what accelerate's prepare does without FSDP
            layers = len(fsdp.decoder_layers(stage.llm))
            param_groups = fsdp.shard_with_groups(stage.objective, stage.llm, compute_precision(run.accelerator),
                                                  param_groups)
            log.info("train.fsdp: %d decoder layers and the rest of the %s model sharded over %d processes",
                     layers, stage.name, run.accelerator.num_processes)
        optimizer = build_adamw(param_groups, lr, weight_decay)
        scheduler = build_schedule(optimizer, run.settings.schedule, run.settings.warmup_steps, steps)
        return cls(run, stage, optimizer, scheduler, steps, logs=[run.metrics, *logs])

    def weights(self) -> dict[str, torch.Tensor]:
        return trainable(self.stage.saved)

    def unsharded(self, build: Callable[[], nn.Module]) -> nn.Module | None:
        """`stage.saved` as trained so far, whole, on the main process (None on the others; every
        process must call it). Under FSDP, `build()` makes a fresh unsharded one the way the run
        made its own, and gets the gathered trainable weights (all that training changed);
        its random draws do not move this process's RNG."""
        if not self.run.settings.fsdp:
            return self.stage.saved if self.run.main else None
        weights = fsdp.full_weights(self.weights())
        if not self.run.main:
            return None
        with torch.random.fork_rng(devices=[]):  # the stages build on the CPU: only its RNG moves
            fresh = build()
        fsdp.load_full_weights(trainable(fresh), weights)
        return fresh

    def resume(self) -> dict[str, Any]:
        """Load the newest good checkpoint (weights, optimiser, schedule, RNG) and cut the logs
        back to its step; returns its state ({} without one: the run starts over)."""
        state = load_latest(self.run.out / "checkpoints")
        if state is None:
            log.info("no usable checkpoint in %s: starting from step 0", self.run.out / "checkpoints")
            self.start, state = 0, {}
        else:
            params = self.weights()
            mismatch = set(state["weights"]) ^ set(params)
            if mismatch:
                raise ValueError(f"checkpoint {state['path']} does not match the model: {sorted(mismatch)[:5]}")
            fsdp.load_full_weights(params, state["weights"])  # each process its shards of the full tensors
            self.optimizer.load_state_dict(fsdp.shard_optimizer_state(self.optimizer, state["optimizer"]))
            self.scheduler.load_state_dict(state["scheduler"])
            continue_schedule(self.optimizer, self.scheduler)
            restore_rng(state["rng"])
            log.info("resumed from %s (step %d)", state["path"], state["step"])
            self.start = int(state["step"])
        for metrics in self.logs:  # without a checkpoint nothing continues: the logs restart with the run
            metrics.truncate_after(self.start if state else -1)
        return state

    def save(self, step: int) -> None:
        meta = {"scheduler": self.scheduler.state_dict(), **self.stage.checkpoint_meta()}
        save_checkpoint(self.run.out / "checkpoints", step, fsdp.full_weights(self.weights()),
                        fsdp.full_optimizer_state(self.optimizer), meta, keep=self.run.settings.keep_checkpoints)

    def fit(self) -> None:
        run, stage = self.run, self.stage
        if run.settings.fsdp:  # sharded in build; accelerate's wrapping is DDP's
            model, clip = stage.objective, fsdp.clip_grad_norm
        else:
            model, self.optimizer = run.accelerator.prepare(stage.objective, self.optimizer)
            clip = run.accelerator.clip_grad_norm_
        params = list(trainable(stage.objective).values())
        model.train()
        stage.before_first_step()
        bar = tqdm(range(self.start, self.steps), initial=self.start, total=self.steps, desc=stage.name,
                   unit="step", disable=not run.main)
        for step in bar:
            began = time.perf_counter()
            means, last, samples = self._accumulate(model, step)
            check_finite(means["loss"], step, run.out)
            grad_norm = apply_update(clip, params, self.optimizer, self.scheduler, run.settings.grad_clip)
            stage.after_update()
            lr = self.optimizer.param_groups[0]["lr"]
            result = StepResult(step + 1, means, last, grad_norm, lr, lr / self.optimizer.param_groups[0]["initial_lr"],
                                samples, time.perf_counter() - began)
            run.metrics.write(stage.log_row(result))
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            if (step + 1) % run.settings.save_every == 0 or step + 1 == self.steps:
                self.save(step + 1)

    def _accumulate(self, model, step: int) -> tuple[dict[str, float], dict[str, float], int]:
        """Forward and backward each micro-batch of a step (in GradCache pieces with train.micro_batch)."""
        accelerator, t = self.run.accelerator, self.run.settings
        means: dict[str, float] = {}
        samples = 0
        for micro in range(t.grad_accum):
            inputs, count = self.stage.micro_batch(step, step * t.grad_accum + micro)
            if t.micro_batch:  # outside DDP's forward: its gradients are averaged below
                with accelerator.autocast():
                    outputs = grad_cache_step(self.stage.objective, inputs, t.batch_size // t.micro_batch,
                                              t.grad_accum)
            else:
                with self._no_sync(model, skip=micro < t.grad_accum - 1):
                    outputs = model(**inputs)
                    accelerator.backward(outputs["loss"] / t.grad_accum)
            last = {key: value.item() for key, value in outputs.items()}
            for key, value in last.items():
                means[key] = means.get(key, 0.0) + value / t.grad_accum
            samples += count
        if t.micro_batch:
            average_gradients([p for p in self.stage.objective.parameters() if p.requires_grad])
        return means, last, samples

    def _no_sync(self, model, skip: bool):
        """DDP's or FSDP's: no gradient reduction while `skip` (a step's micro-batches but its last)."""
        if self.run.settings.fsdp:
            return fsdp.no_gradient_sync(model, skip)
        return self.run.accelerator.no_sync(model) if skip else nullcontext()


def trainable(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of `module` that train, by name (what a checkpoint holds)."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def check_finite(value: float, step: int, out: Path) -> None:
    if not math.isfinite(value):
        good = list_checkpoints(out / "checkpoints")
        where = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was written yet"
        raise TrainingError(f"the loss became {value} at step {step}; stopping before the update ({where}). "
                            f"Lower the learning rate or check the data, then --resume.")


def continue_schedule(optimizer, scheduler) -> None:
    """Set each group's lr to this run's schedule at the checkpoint's step. The restored
    optimiser holds the lr the saved run's schedule gave there; a resume with a larger
    max_steps or epochs (the run-length keys a resume may change) would take its first step
    at that stale value."""
    lrs = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports until the next step


def apply_update(clip, params, optimizer, scheduler, grad_clip: float) -> float | None:
    """Clip (when grad_clip > 0, with `clip(params, max_norm)`: accelerate's or FSDP's), step the
    optimizer and schedule, clear the gradients; returns the gradient norm before clipping
    (None without clipping)."""
    grad_norm = clip(params, grad_clip) if grad_clip > 0 else None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm) if grad_norm is not None else None
