"""Stage 1: fine-tune an LLM into a caption embedding model (supervised SimCSE + LoRA).

One code path for a CPU, one GPU and many processes (torchrun / accelerate launch): each
rank encodes its slice of a global batch, and the loss gathers every rank's embeddings
so that the negatives are the whole global batch. Batches come from a deterministic
`PairSchedule`, so a resumed run replays exactly what an uninterrupted run would see.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import distributed as dist_utils
from ..atomic_file import atomic_folder
from ..data.pair_schedule import PairSchedule
from ..data.records import read_caption_records
from ..data.text_pairs import read_text_pairs
from ..eval.cra import cra_for_encoder
from ..text import CaptionEncoder
from .metrics_log import MetricsLog
from .optim import build_adamw, build_schedule, decay_groups, total_steps
from .runtime import apply_update, check_finite, make_accelerator, prepare_output, setup_logging
from .stage1_config import Stage1Config
from .stage1_objective import Stage1Objective
from .training_state import restore_training_state, save_training_state

log = logging.getLogger("llm2clip.stage1")


def load_encoder(cfg: Stage1Config) -> CaptionEncoder:
    m = cfg.model
    encoder = CaptionEncoder.from_pretrained(
        m.name, pooling=m.pooling, bidirectional=m.bidirectional, instruction=m.instruction,
        max_length=m.max_length, lora=m.lora, dtype=m.dtype, precision="fp32",
        lm_head=cfg.train.mntp_weight > 0, trust_remote_code=m.trust_remote_code,
    )
    if m.lora is None:  # full fine-tuning
        for param in encoder.model.parameters():
            param.requires_grad_(True)
    if m.gradient_checkpointing:
        encoder.gradient_checkpointing_enable()
    return encoder


def build_schedule_for(cfg: Stage1Config, world_size: int) -> PairSchedule:
    records, stats = read_caption_records(cfg.data.train, caption_fields=cfg.data.caption_fields,
                                          id_field=cfg.data.id_field, image_field=cfg.data.image_field)
    log.info("training captions: %s", stats.summary())
    pairs = read_text_pairs(cfg.data.text_pairs)[0] if cfg.data.text_pairs else None
    schedule = PairSchedule(records, text_pairs=pairs, text_pair_ratio=cfg.data.text_pair_ratio,
                            global_batch_size=cfg.train.batch_size * world_size, seed=cfg.train.seed)
    if schedule.skipped_single_caption:
        log.info("skipped %d records with fewer than two distinct captions", schedule.skipped_single_caption)
    return schedule


def run_cra(encoder: CaptionEncoder, cfg: Stage1Config) -> dict[str, Any] | None:
    """Caption retrieval accuracy on the configured held-out records (main process)."""
    if not cfg.eval.cra:
        return None
    return cra_for_encoder(encoder, cfg.eval.cra, fields=cfg.eval.cra_fields, limit=cfg.eval.cra_limit,
                           batch_size=cfg.eval.batch_size)


def train_stage1(cfg: Stage1Config, resume: bool = False,
                 config_file: str | None = None) -> dict[str, Any]:
    """Run stage 1 end to end; returns a summary (final paths, CRA before/after, steps)."""
    cfg.validate()
    t = cfg.train
    accelerator = make_accelerator(t.precision, t.device)
    main = accelerator.is_main_process
    setup_logging(main)
    out = prepare_output(t.output_dir, cfg, resume, main, config_file)
    torch.manual_seed(t.seed)
    schedule = build_schedule_for(cfg, accelerator.num_processes)
    steps = total_steps(t.max_steps, t.epochs, schedule.steps_per_epoch, t.grad_accum)
    encoder = load_encoder(cfg).to(accelerator.device)
    objective = Stage1Objective(encoder, t.temperature, t.mntp_weight,
                                t.mntp_probability, with_negatives=schedule.has_negatives)
    optimizer = build_adamw(decay_groups(encoder.named_parameters(), t.lr, t.weight_decay),
                            t.lr, t.weight_decay)
    scheduler = build_schedule(optimizer, t.schedule, t.warmup_steps, steps)
    metrics = MetricsLog(out / "metrics.jsonl", enabled=main)

    start = _resume(out, encoder, optimizer, scheduler, metrics) if resume else 0
    cra_before = None
    if start == 0 and main:
        cra_before = run_cra(encoder, cfg)
        if cra_before:
            log.info("CRA before training: %s", cra_before)
            metrics.write({"step": 0, "cra_before": cra_before})
    model, optimizer = accelerator.prepare(objective, optimizer)
    _train_loop(cfg, accelerator, model, encoder, optimizer, scheduler, schedule, metrics, out, start, steps)

    summary: dict[str, Any] = {"steps": steps, "output_dir": str(out), "truncated_captions": encoder.num_truncated}
    if main:
        summary.update(_finish(cfg, encoder, out, metrics, cra_before))
    dist_utils.barrier()
    accelerator.end_training()
    return summary


def _resume(out: Path, encoder, optimizer, scheduler, metrics: MetricsLog) -> int:
    step, state = restore_training_state(out, encoder, optimizer, scheduler, [metrics])
    encoder.num_truncated = state.get("truncated_captions", 0)
    return step


def _train_loop(cfg, accelerator, model, encoder, optimizer, scheduler, schedule, metrics, out, start, steps):
    t = cfg.train
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    rank, world = accelerator.process_index, accelerator.num_processes
    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="stage1", unit="step",
               disable=not accelerator.is_main_process)
    for step in bar:
        began = time.perf_counter()
        parts: dict[str, float] = {}
        for micro in range(t.grad_accum):
            index = step * t.grad_accum + micro
            # MNTP masks depend only on (seed, micro-step, rank): identical after a resume
            generator = torch.Generator().manual_seed((t.seed * 1_000_003 + index) * 1_009 + rank)
            batch = objective_of(model).make_batch(schedule.local_batch(index, rank, world), generator)
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            sync = nullcontext() if micro == t.grad_accum - 1 else accelerator.no_sync(model)
            with sync:
                out_losses = model(**batch)
                accelerator.backward(out_losses["loss"] / t.grad_accum)
            for key, value in out_losses.items():
                parts[key] = parts.get(key, 0.0) + value.item() / t.grad_accum
        check_finite(parts["loss"], step, out)
        grad_norm = apply_update(accelerator, trainable, optimizer, scheduler, t.grad_clip)
        elapsed = time.perf_counter() - began
        pairs = t.batch_size * world * t.grad_accum
        row = {"step": step + 1, "epoch": step * t.grad_accum // schedule.steps_per_epoch, **parts,
               "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
               "pairs_per_s": pairs / elapsed, "truncated_captions": encoder.num_truncated}
        metrics.write(row)
        bar.set_postfix(loss=f"{parts['loss']:.4f}")
        if (step + 1) % t.save_every == 0 or step + 1 == steps:
            _save(out, step + 1, encoder, optimizer, scheduler, t.keep_checkpoints)


def objective_of(model) -> Stage1Objective:
    return model.module if hasattr(model, "module") else model


def _save(out: Path, step: int, encoder, optimizer, scheduler, keep: int) -> None:
    save_training_state(out, step, encoder, optimizer, scheduler, keep, {"truncated_captions": encoder.num_truncated})


def _finish(cfg: Stage1Config, encoder: CaptionEncoder, out: Path, metrics: MetricsLog, cra_before) -> dict:
    encoder.eval()
    final = out / "final"
    with atomic_folder(final) as staging:  # a failure leaves an earlier final/ whole
        encoder.save_pretrained(staging)
    result: dict[str, Any] = {"encoder": str(final)}
    if cfg.train.save_merged:
        with atomic_folder(out / "final-merged") as staging:
            encoder.save_pretrained(staging, merge=True)
        result["merged"] = str(out / "final-merged")
    cra_after = run_cra(encoder, cfg)
    if cra_after:
        log.info("CRA after training: %s", cra_after)
        if cra_before is None:  # resumed: the before-figure was logged by the first run
            cra_before = next((r["cra_before"] for r in metrics.read() if "cra_before" in r), None)
        result["cra"] = {"before": cra_before, "after": cra_after}
        (out / "cra.json").write_text(json.dumps(result["cra"], indent=2) + "\n", encoding="utf-8")
    if encoder.num_truncated:
        log.warning("%d training captions were truncated to max_length=%d tokens",
                    encoder.num_truncated, cfg.model.max_length)
    return result
