"""Stage 1: fine-tune an LLM into a caption embedding model (supervised SimCSE + LoRA).

One code path for a CPU, one GPU and many processes (torchrun / accelerate launch): each
rank encodes its slice of a global batch, and the loss gathers every rank's embeddings
so that the negatives are the whole global batch. Batches come from a deterministic
`PairSchedule`, so a resumed run replays exactly what an uninterrupted run would see.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..atomic_file import atomic_folder
from ..data.pair_schedule import PairSchedule
from ..data.records import read_caption_records
from ..data.text_pairs import read_text_pairs
from ..eval.cra import cra_for_encoder
from ..text import CaptionEncoder
from .loop import Run, Stage, StepResult, Training, start_run
from .metrics_log import MetricsLog
from .optim import decay_groups, total_steps
from .stage1_config import Stage1Config
from .stage1_objective import Stage1Objective

log = logging.getLogger("llm2clip.stage1")


def load_encoder(cfg: Stage1Config) -> CaptionEncoder:
    m = cfg.model
    encoder = CaptionEncoder.from_pretrained(
        m.name, pooling=m.pooling, bidirectional=m.bidirectional, instruction=m.instruction,
        max_length=m.max_length, lora=m.lora, dtype=m.dtype, precision="fp32",
        lm_head=cfg.train.mntp_weight > 0, trust_remote_code=m.trust_remote_code, adaptor=m.adaptor,
    )
    if m.lora is None:  # full fine-tuning, or (freeze_llm) the adaptor alone
        encoder.set_llm_trainable(not m.freeze_llm)
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
    run = start_run(cfg, resume, config_file)
    t = cfg.train
    schedule = build_schedule_for(cfg, run.accelerator.num_processes)
    steps = total_steps(t.max_steps, t.epochs, schedule.steps_per_epoch, t.grad_accum)
    encoder = load_encoder(cfg).to(run.accelerator.device)
    objective = Stage1Objective(encoder, t.temperature, t.mntp_weight, t.mntp_probability,
                                with_negatives=schedule.has_negatives and t.simcse == "supervised",
                                simcse=t.simcse)
    training = Training.build(run, CaptionPairs(cfg, run, objective, schedule),
                              decay_groups(encoder.parameters(), t.lr, t.weight_decay), t.lr, t.weight_decay, steps)
    if resume:
        encoder.num_truncated = training.resume().get("truncated_captions", 0)
    cra_before = None
    if training.start == 0 and cfg.eval.cra:
        before = whole_encoder(training, cfg, encoder)
        if run.main:
            cra_before = run_cra(before, cfg)
            log.info("CRA before training: %s", cra_before)
            run.metrics.write({"step": 0, "cra_before": cra_before})
        del before
    training.fit()

    summary: dict[str, Any] = {"steps": steps, "output_dir": str(run.out), "truncated_captions": encoder.num_truncated}
    trained = whole_encoder(training, cfg, encoder)
    if run.main:
        summary.update(_finish(cfg, trained, run.out, run.metrics, cra_before))
    run.end()
    return summary


def whole_encoder(training: Training, cfg: Stage1Config, encoder: CaptionEncoder) -> CaptionEncoder | None:
    """`encoder` as trained so far, unsharded, on the main process (None on the others; every
    process calls it): under train.fsdp a fresh one with the gathered weights, else itself."""
    whole = training.unsharded(lambda: load_encoder(cfg).to(encoder.device))
    if whole is not None:
        whole.num_truncated = encoder.num_truncated
    return whole


class CaptionPairs(Stage):
    """Stage 1 for the loop: batches of caption pairs from the deterministic PairSchedule."""
    name = "stage1"

    def __init__(self, cfg: Stage1Config, run: Run, objective: Stage1Objective, schedule: PairSchedule):
        self.cfg, self.run, self.objective, self.schedule = cfg, run, objective, schedule
        self.saved = objective.encoder
        self.llm = objective.encoder.model

    def micro_batch(self, step: int, index: int) -> tuple[dict[str, Any], int]:
        rank, world = self.run.accelerator.process_index, self.run.accelerator.num_processes
        # MNTP masks depend only on (seed, micro-step, rank): identical after a resume
        generator = torch.Generator().manual_seed((self.cfg.train.seed * 1_000_003 + index) * 1_009 + rank)
        examples = self.schedule.local_batch(index, rank, world)
        batch = self.objective.make_batch(examples, generator)
        device = self.run.accelerator.device
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, len(examples)

    def log_row(self, result: StepResult) -> dict[str, Any]:
        t = self.cfg.train
        pairs = t.batch_size * self.run.accelerator.num_processes * t.grad_accum
        return {"step": result.step, "epoch": (result.step - 1) * t.grad_accum // self.schedule.steps_per_epoch,
                **result.means, "lr": result.lr, "grad_norm": result.grad_norm,
                "pairs_per_s": pairs / result.seconds, "truncated_captions": self.objective.encoder.num_truncated}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"truncated_captions": self.objective.encoder.num_truncated}


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
