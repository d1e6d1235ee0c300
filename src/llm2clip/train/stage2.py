"""Stage 2: post-train a CLIP vision tower + adaptor against the stage-1 caption encoder.

Modes (paper Table 11): `offline` reads caption embeddings from the store written by
`llm2clip embed` and never loads the LLM; `online_frozen` runs the frozen LLM in the
loop; `online_lora` also trains its LoRA weights. One code path for CPU, GPU and many
processes: each rank takes its slice of a global batch planned from (seed, step), and the
loss gathers all ranks' features, so 2 processes = 1 process on the global batch.
Offline, the store is checked against the data before the first step (every caption
that can be drawn must be the text its embedding was computed from), and samples draw
only among the caption fields the store holds for them. Per-sample data faults
(unreadable images, no caption) are skipped, counted, and listed in `skipped-rank{r}.jsonl`.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import distributed as dist_utils
from ..atomic_file import atomic_folder
from ..data.batch_plan import BatchPlan
from ..data.caption_choice import CaptionChoice
from ..data.image_text import ImageTextDataset, StepBatchSampler, collate_samples
from ..data.records import read_caption_records
from ..errors import DataError
from ..losses import LOSSES
from ..model import LLM2CLIP, LLM2CLIPConfig
from ..multi_encoder import needs_clip_text
from .loop import Run, Stage, StepResult, Training, start_run
from .metrics_log import MetricsLog
from .optim import decay_groups, total_steps
from .stage2_config import Stage2Config
from .stage2_objective import Stage2Objective

log = logging.getLogger("llm2clip.stage2")


def train_stage2(cfg: Stage2Config, resume: bool = False,
                 config_file: str | None = None) -> dict[str, Any]:
    run = start_run(cfg, resume, config_file)
    t = cfg.train
    encoder, store = load_text_side(cfg)
    objective = build_objective(cfg, encoder, store)
    model = objective.model
    global_batch = t.batch_size * run.accelerator.num_processes
    if cfg.data.train_shards:
        dataset, plan = None, None
        steps = total_steps(t.max_steps, t.epochs, (cfg.data.samples_per_epoch or 0) // global_batch, t.grad_accum)
    else:
        dataset = build_dataset(cfg, model, store)
        if cfg.model.cache_image_features:
            dataset.image_features = cache_image_features(dataset, model, t.batch_size, run.accelerator.device)
        plan = BatchPlan(len(dataset), global_batch, t.seed)
        steps = total_steps(t.max_steps, t.epochs, plan.steps_per_epoch, t.grad_accum)
    stage = ImageCaptions(cfg, run, objective)
    training = Training.build(run, stage, param_groups(cfg, model, encoder), t.lr_vision, t.weight_decay_vision,
                              steps, logs=[stage.skipped_log])
    if resume:
        training.resume()
    start = training.start * t.grad_accum  # micro-batches of this rank trained already
    if dataset is None:
        stage.loader = build_stream_loader(cfg, model, store, start, run.accelerator)
    else:
        stage.loader = DataLoader(dataset, collate_fn=collate_samples, num_workers=cfg.data.num_workers,
                                  batch_sampler=StepBatchSampler(plan, start, steps * t.grad_accum,
                                                                 run.accelerator.process_index,
                                                                 run.accelerator.num_processes))
    training.fit()
    summary: dict[str, Any] = {"steps": steps, "output_dir": str(run.out), "skipped": dict(stage.skipped)}
    dist_utils.barrier()
    # under train.fsdp a fresh objective with the gathered weights, on the main process
    trained = training.unsharded(lambda: build_objective(cfg, *load_text_side(cfg)))
    if run.main:
        summary["model"] = str(_finish(cfg, trained.model, trained.caption_encoder, run.out))
        _report_skips(run.out)
    run.end()
    return summary


# ------------------------------------------------------------------ building
def load_text_side(cfg: Stage2Config):
    """(caption encoder or None, embedding store or None) for the configured mode."""
    from ..text import load_caption_encoder

    if cfg.train.mode == "offline":
        from ..embeddings import EmbeddingStore, expected_identity_of_folder

        store = EmbeddingStore.open(cfg.data.embeddings,
                                    expected_identity=expected_identity_of_folder(cfg.model.caption_encoder))
        _warn_unstored_fields(cfg, store)
        return None, store
    encoder = load_caption_encoder(cfg.model.caption_encoder, precision="fp32")
    encoder.requires_grad_(False)
    if cfg.train.mode == "online_lora":
        if not encoder.has_lora:
            raise ValueError(f"{cfg.model.caption_encoder}: online_lora needs a LoRA (adapter-format) stage-1 folder")
        for name, param in encoder.named_parameters():
            param.requires_grad_("lora_" in name)
        if cfg.model.gradient_checkpointing:  # the LLM's activations dominate memory once it trains
            encoder.gradient_checkpointing_enable()
    else:
        encoder.eval()
    return encoder, None


def build_objective(cfg: Stage2Config, encoder, store) -> Stage2Objective:
    """The model (seeded) and the objective around it and the text side of `load_text_side`."""
    t = cfg.train
    torch.manual_seed(t.seed)  # loading the encoder may draw random numbers: offline = online init
    model = build_model(cfg, encoder, store)
    return Stage2Objective(model, t.loss, encoder if t.mode != "offline" else None,
                           train_encoder=t.mode == "online_lora")


def _warn_unstored_fields(cfg: Stage2Config, store) -> None:
    """Name, once, the configured caption fields no sample can draw offline."""
    from ..embeddings.alignment import unstored_fields

    missing = unstored_fields(store, caption_fields(cfg))
    if missing and dist_utils.rank() == 0:
        log.warning("%s holds no embedding of the configured caption field(s) %s: offline, samples draw only "
                    "among the fields stored (%s); embed those fields too to train on them",
                    store.directory, missing, ", ".join(store.fields))


def caption_fields(cfg: Stage2Config) -> list[str]:
    """The configured real and dense caption fields, each once."""
    return list(dict.fromkeys(list(cfg.data.real_fields) + list(cfg.data.dense_fields)))


def verify_store(cfg: Stage2Config, store, samples) -> None:
    """Every drawable caption of this rank's `samples` ((id, {field: caption}) pairs) must be
    the text its stored embedding was computed from; all ranks agree (embeddings/alignment.py)."""
    from ..embeddings.alignment import embed_command, verify_alignment

    data = cfg.data.train_shards or cfg.data.train
    began = time.perf_counter()
    found = verify_alignment(store, samples, caption_fields(cfg), data=data,
                             redo=embed_command(store, cfg.model.caption_encoder, data,
                                                "id" if cfg.data.train_shards else cfg.data.id_field))
    log.info("%s: %d captions of %d samples match the store (checked in %.1f s, all ranks)", store.directory,
             found.captions, found.samples, time.perf_counter() - began)


def build_model(cfg: Stage2Config, encoder, store) -> LLM2CLIP:
    m = cfg.model
    terms = list(m.loss_terms)
    config = LLM2CLIPConfig(vision=m.vision, text_dim=store.dim if store is not None else encoder.dim,
                            embed_dim=m.embed_dim, adaptor=dict(m.adaptor), logit_scale_init=m.logit_scale_init,
                            logit_bias_init=m.logit_bias_init if LOSSES[cfg.train.loss].learns_bias else None,
                            max_logit_scale=m.max_logit_scale, caption_encoder=m.caption_encoder,
                            loss_terms=terms, cat_dim=m.cat_dim,
                            clip_text_dim=clip_text_dim(cfg, encoder, store) if needs_clip_text(terms) else 0)
    model = LLM2CLIP(config)
    groups = model.vision.layer_groups()
    if not 0 <= m.frozen_vision_groups <= len(groups):
        raise ValueError(f"model.frozen_vision_groups={m.frozen_vision_groups}: the tower has {len(groups)} groups")
    if m.cache_image_features and (m.frozen_vision_groups != len(groups) or cfg.data.train_shards):
        raise ValueError(f"model.cache_image_features needs the whole tower frozen (model.frozen_vision_groups="
                         f"{len(groups)}) and records data (not data.train_shards)")
    for params in groups[:m.frozen_vision_groups]:  # bottom first: no graph is built below the first trained one
        for param in params:
            param.requires_grad_(False)
    if m.gradient_checkpointing:
        model.vision.gradient_checkpointing_enable()
    return model


def clip_text_dim(cfg: Stage2Config, encoder, store) -> int:
    """The width of the CLIP-T part of a concat caption encoder's embedding, as its identity
    (or the store's record of it) says; an error for an LLM alone."""
    found = (store.identity if store is not None else encoder.identity()).get("concat_clip_dim", 0)
    if not found:
        raise ValueError(f"model.loss_terms {list(cfg.model.loss_terms)} need a concat caption encoder "
                         f"([LLM | CLIP text], made by `llm2clip concat-encoder`); {cfg.model.caption_encoder} "
                         "is an LLM alone")
    return int(found)


def build_dataset(cfg: Stage2Config, model: LLM2CLIP, store) -> ImageTextDataset:
    d = cfg.data
    records, stats = read_caption_records(d.train, caption_fields=caption_fields(cfg), id_field=d.id_field,
                                          image_field=d.image_field, require_all_fields=False)
    log.info("stage-2 data: %s", stats.summary())
    if store is not None:  # each rank checks its share of the records
        mine = records[dist_utils.rank()::dist_utils.world_size()]
        verify_store(cfg, store, ((r.id, r.caption_by_source()) for r in mine))
    choice = CaptionChoice(tuple(d.real_fields), tuple(d.dense_fields), d.dense_ratio, cfg.train.seed)
    root = d.image_root or str(Path(d.train).resolve().parent)
    return ImageTextDataset(records, root, model.vision.preprocess, choice, store=store,
                            with_text=cfg.train.mode != "offline")


@torch.no_grad()
def cache_image_features(dataset: ImageTextDataset, model: LLM2CLIP, batch_size: int, device) -> dict:
    """{index: pooled features of the frozen tower, or the skip reason}, every image once, in order."""
    features: dict[int, torch.Tensor | str] = {}
    model.vision.eval()
    for start in tqdm(range(0, len(dataset), batch_size), desc="image features", unit="batch",
                      disable=dist_utils.rank() != 0):
        indices, pixels = [], []
        for index in range(start, min(start + batch_size, len(dataset))):
            try:
                pixels.append(dataset.load_pixels(index))
                indices.append(index)
            except (DataError, OSError) as err:
                features[index] = type(err).__name__ + ": " + str(err)
        if pixels:
            pooled = model.vision(torch.stack(pixels).to(device)).float().cpu()
            features.update(zip(indices, pooled))
    return features


def build_stream_loader(cfg: Stage2Config, model: LLM2CLIP, store, done_batches: int, accelerator) -> DataLoader:
    """Webdataset shards, streamed; `done_batches` micro-batches of this rank were trained already."""
    from ..data.webdataset_source import WebDatasetStream, as_is, expand_shards, shard_captions

    d = cfg.data
    if store is not None:  # a pre-pass over the caption members; each rank checks its share of the shards
        mine = expand_shards(d.train_shards)[accelerator.process_index::accelerator.num_processes]
        verify_store(cfg, store, shard_captions(mine, workers=d.num_workers))
    choice = CaptionChoice(tuple(d.real_fields), tuple(d.dense_fields), d.dense_ratio, cfg.train.seed)
    stream = WebDatasetStream(d.train_shards, model.vision.preprocess, choice, cfg.train.batch_size, store=store,
                              with_text=cfg.train.mode != "offline", seed=cfg.train.seed,
                              rank=accelerator.process_index, world_size=accelerator.num_processes,
                              resampled=d.resampled, skip_batches=done_batches, shuffle_buffer=d.shuffle_buffer)
    return DataLoader(stream, batch_size=None, collate_fn=as_is, num_workers=d.num_workers)


def param_groups(cfg: Stage2Config, model: LLM2CLIP, encoder) -> list[dict]:
    """Tower layers with layer-wise lr decay; projection + adaptor; logit scale/bias; LoRA."""
    t = cfg.train
    groups: list[dict] = []
    layers = model.vision.layer_groups()
    for depth, params in enumerate(layers):
        lr = t.lr_vision * t.layer_decay ** (len(layers) - 1 - depth)
        groups += decay_groups(params, lr, t.weight_decay_vision)
    scalars = model.logit_parameters()
    heads = [p for name, p in model.named_parameters()  # projection(s), adaptor, multi-encoder heads
             if not name.startswith("vision.") and all(p is not s for s in scalars)]
    groups += decay_groups(heads, t.lr_adaptor, t.weight_decay_adaptor)
    groups.append({"params": scalars, "lr": t.lr_logit_scale, "weight_decay": 0.0})
    if encoder is not None and t.mode == "online_lora":
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": t.lr_llm,
                       "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


# ------------------------------------------------------------------ the loop's part
class ImageCaptions(Stage):
    """Stage 2 for the loop: image-caption micro-batches from `loader` (set before fit);
    per-sample faults are counted and listed in skipped-rank{r}.jsonl."""
    name = "stage2"

    def __init__(self, cfg: Stage2Config, run: Run, objective: Stage2Objective):
        self.cfg, self.run, self.objective, self.saved = cfg, run, objective, objective
        encoder = objective.caption_encoder  # the LLM's, or a concat encoder's LLM's
        self.llm = None if encoder is None else getattr(encoder, "llm", encoder).model
        self.loader: DataLoader | None = None
        self.batches = None  # its iterator, made at the first micro-batch
        self.skipped: Counter = Counter()
        self.skipped_log = MetricsLog(run.out / f"skipped-rank{run.accelerator.process_index}.jsonl")  # each rank its own

    def before_first_step(self) -> None:
        objective = self.objective
        if self.cfg.model.frozen_vision_groups == len(objective.model.vision.layer_groups()):
            objective.model.vision.eval()  # wholly frozen: no dropout, the numbers cached features give
        if objective.caption_encoder is not None and not objective.train_encoder:
            objective.caption_encoder.eval()  # frozen: no dropout, same numbers as the store

    def micro_batch(self, step: int, index: int) -> tuple[dict[str, Any], int]:
        if self.batches is None:
            self.batches = iter(self.loader)
        batch = next(self.batches)
        for sample_id, reason in batch["skipped"]:
            self.skipped[reason.split(":")[0]] += 1
            self.skipped_log.write({"step": step + 1, "id": sample_id, "reason": reason})
        return _inputs(batch, self.objective, self.run.accelerator.device), len(batch["ids"])

    def after_update(self) -> None:
        self.objective.model.clamp_logit_scale()

    def log_row(self, result: StepResult) -> dict[str, Any]:
        terms = {key: value for key, value in result.means.items() if key.startswith("loss_")}
        return {"step": result.step, "loss": result.means["loss"], **terms, "logit_scale": result.last["logit_scale"],
                "lr_factor": result.lr_factor, "grad_norm": result.grad_norm,
                "samples_per_s": result.samples * self.run.accelerator.num_processes / result.seconds,
                "skipped_so_far": sum(self.skipped.values())}


def _inputs(batch: dict, objective: Stage2Objective, device) -> dict:
    if not batch["ids"]:
        sample_id, reason = batch["skipped"][0] if batch["skipped"] else ("?", "?")
        raise ValueError(f"every sample of a micro-batch was skipped (e.g. sample {sample_id!r}: {reason}); "
                         "see skipped-rank*.jsonl")
    if "image_features" in batch:
        inputs: dict[str, Any] = {"image_features": batch["image_features"].to(device)}
    else:
        inputs = {"pixels": batch["pixels"].to(device)}
    if "text_embeddings" in batch:
        inputs["text_embeddings"] = batch["text_embeddings"].to(device)
    else:
        tokens = objective.caption_encoder.tokenize(batch["texts"])
        inputs["text_batch"] = {k: v.to(device) for k, v in tokens.items()}
    return inputs


def _finish(cfg: Stage2Config, model: LLM2CLIP, encoder, out: Path) -> Path:
    """final/ = the model + its caption encoder: the tuned one (online_lora) or a copy
    of the stage-1 folder, so from_pretrained(final) encodes both sides. Built aside and
    renamed into place: a failure leaves an earlier final/ whole."""
    final = out / "final"
    model.eval()
    with atomic_folder(final) as staging:
        model.save_pretrained(staging, save_caption_encoder=False)
        target = staging / "caption_encoder"
        if cfg.train.mode == "online_lora":
            encoder.save_pretrained(target)
        elif Path(cfg.model.caption_encoder).is_dir():
            shutil.copytree(cfg.model.caption_encoder, target)
    return final


def _report_skips(out: Path) -> None:
    rows = [row for path in sorted(out.glob("skipped-rank*.jsonl")) for row in MetricsLog(path).read()]
    if rows:
        reasons = Counter(r["reason"].split(":")[0] for r in rows)
        log.warning("skipped %d samples (%s); listed in %s", len(rows), dict(reasons), out / "skipped-rank*.jsonl")
