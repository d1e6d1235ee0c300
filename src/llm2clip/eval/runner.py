"""`llm2clip eval --config`: every configured benchmark on every configured model.

Benchmarks are read (and checked) before any model is loaded, so a missing image or a
malformed caption file fails in seconds, not after an hour of encoding. Each model is
loaded once and runs every benchmark; its embeddings of each benchmark are cached.
The output folder gets results.json, report.md and the PNG plots (eval/report.py).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..devices import resolve_device
from ..output_paths import require_writable_folder
from .embedding_cache import EmbeddingCache
from .eval_config import RETRIEVAL_KINDS, BenchmarkSpec, EvalConfig
from .models import encode_images, encode_texts, load_eval_model, model_fingerprint, text_limit

log = logging.getLogger("llm2clip.eval")


@dataclass
class LoadedBenchmark:
    name: str  # unique: a multilingual benchmark becomes one per language ("xm3600/de")
    kind: str  # retrieval | zeroshot | linear_probe | cra
    data: Any
    language: str | None = None


@dataclass
class EvalModel:
    """A model column of the report, loaded when its turn comes (one model in memory at a time)."""
    name: str
    load: Callable[[], Any]  # returns an object with encode_image / encode_text (eval/models.py)
    fingerprint: str  # changes whenever the model does: keys its cached embeddings
    description: str = ""  # for the log


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    from .report import write_report

    cfg.validate()
    device = resolve_device(cfg.device)
    out = require_writable_folder(cfg.output_dir, "output_dir")  # before any embedding is computed
    benchmarks = [b for spec in cfg.benchmarks for b in load_benchmark(spec, cfg.skip_missing)]
    models = [EvalModel(spec.name, functools.partial(load_eval_model, spec, device), model_fingerprint(spec),
                        f"{spec.path} ({spec.kind})") for spec in cfg.models]
    results = evaluate(models, benchmarks, EmbeddingCache(out / "cache" if cfg.cache else None), cfg.batch_size)
    results["files"] = {k: str(v) for k, v in write_report(results, out).items()}
    return results


def evaluate(models: list[EvalModel], benchmarks: list[LoadedBenchmark], cache: EmbeddingCache,
             batch_size: int) -> dict[str, Any]:
    """Every benchmark on every model: the results dict that report.py writes."""
    results: dict[str, Any] = {"models": [m.name for m in models], "benchmarks": {
        b.name: {"kind": b.kind, "language": b.language, "results": {}, "notes": {}} for b in benchmarks}}
    for entry in models:
        log.info("model %s: %s", entry.name, entry.description or "loading")
        model = entry.load()
        session = ModelSession(entry.name, model, entry.fingerprint, cache, batch_size)
        for bench in benchmarks:
            metrics, note = EVALUATORS[bench.kind](session, bench)
            slot = results["benchmarks"][bench.name]
            slot["results"][entry.name] = metrics
            if note:
                slot["notes"][entry.name] = note
            log.info("%s on %s: %s", entry.name, bench.name, _headline(metrics))
        del model, session
    return results


# ------------------------------------------------------------------ reading
def load_benchmark(spec: BenchmarkSpec, skip_missing: bool) -> list[LoadedBenchmark]:
    from . import datasets as readers

    options = dict(image_root=spec.image_root, skip_missing=skip_missing, limit=spec.limit)
    if spec.kind == "xm3600":
        languages = spec.languages or readers.xm3600_languages(spec.path)
        return [LoadedBenchmark(f"{spec.name}/{lang}", "retrieval",
                                readers.read_xm3600(spec.path, language=lang, **options), lang)
                for lang in languages]
    if spec.kind in RETRIEVAL_KINDS:
        extra = {"fields": spec.fields or None, "image_field": spec.image_field} if spec.kind in ("jsonl", "csv") else {}
        return [LoadedBenchmark(spec.name, "retrieval",
                                readers.load_retrieval_benchmark(spec.kind, spec.path, **options, **extra))]
    if spec.kind == "cra":
        return [LoadedBenchmark(spec.name, "cra", _cra_pairs(spec))]
    folder = dict(class_names=_lines(spec.class_names), skip_missing=skip_missing)
    if spec.kind == "zeroshot":
        return [LoadedBenchmark(spec.name, "zeroshot",
                                readers.read_class_folder(spec.path, templates=spec.templates, **folder))]
    train, test = readers.read_class_folder(spec.train, **folder), readers.read_class_folder(spec.path, **folder)
    if train.class_names != test.class_names:
        raise ValueError(f"benchmark {spec.name}: train ({spec.train}) and test ({spec.path}) class folders differ")
    return [LoadedBenchmark(spec.name, "linear_probe", (train, test, spec))]


def _cra_pairs(spec: BenchmarkSpec) -> tuple[list[str], list[str]]:
    from ..data.records import read_caption_records

    records, stats = read_caption_records(spec.path, caption_fields=spec.fields or None, min_captions=2)
    records = records[:spec.limit] if spec.limit is not None else records
    if len(records) < 2:
        raise ValueError(f"benchmark {spec.name}: {spec.path} has {len(records)} records with two captions; "
                         f"CRA needs at least 2 ({stats.summary()})")
    return [r.captions[0] for r in records], [r.captions[1] for r in records]


def _lines(path: str | None) -> list[str] | None:
    if not path:
        return None
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


# ------------------------------------------------------------------ encoding
@dataclass
class ModelSession:
    """One loaded model and its cached encoders."""
    name: str
    model: Any
    fingerprint: str
    cache: EmbeddingCache
    batch_size: int
    # images already encoded by this model in this run, by their path list: benchmarks that
    # share images (one per language, one per caption field) encode them once
    seen_images: dict[tuple[str, ...], torch.Tensor] = field(default_factory=dict)

    def images(self, label: str, paths) -> torch.Tensor:
        paths = [str(p) for p in paths]
        if tuple(paths) not in self.seen_images:
            key = self.cache.key(self.fingerprint, "image", paths, files=True)
            self.seen_images[tuple(paths)] = self.cache.get_or_compute(
                f"{_safe(self.name)}-{_safe(label)}-image", key,
                lambda: (encode_images(self.model, paths, self.batch_size, desc=f"{label} images"), 0))[0]
        return self.seen_images[tuple(paths)]

    def texts(self, label: str, texts: list[str]) -> tuple[torch.Tensor, int]:
        key = self.cache.key(self.fingerprint, "text", texts)
        return self.cache.get_or_compute(f"{_safe(self.name)}-{_safe(label)}-text", key,
                                         lambda: encode_texts(self.model, texts, self.batch_size))

    def truncation_note(self, truncated: int, total: int) -> str | None:
        if not truncated:
            return None
        return f"{truncated} of {total} captions truncated at {text_limit(self.model)} tokens"


def _safe(label: str) -> str:
    """A model or benchmark name as part of a file name: no separators, no leading dot."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).lstrip(".") or "_"


# ------------------------------------------------------------------ evaluating
def evaluate_retrieval(session: ModelSession, bench: LoadedBenchmark):
    from .random_ties import random_tie_recall_at_1
    from .retrieval import retrieval_metrics

    data = bench.data
    images = session.images(bench.name, data.image_paths)
    texts, truncated = session.texts(bench.name, data.texts)
    _check_dims(bench.name, images, texts)
    metrics = retrieval_metrics(images, texts, data.text_to_image)
    metrics.update(random_tie_recall_at_1(images, texts, data.text_to_image))
    return metrics, session.truncation_note(truncated, len(data.texts))


def evaluate_cra(session: ModelSession, bench: LoadedBenchmark):
    from .cra import caption_retrieval_accuracy

    first, second = bench.data
    embeddings, truncated = session.texts(bench.name, first + second)
    metrics = caption_retrieval_accuracy(embeddings[:len(first)], embeddings[len(first):])
    return metrics, session.truncation_note(truncated, 2 * len(first))


def evaluate_zeroshot(session: ModelSession, bench: LoadedBenchmark):
    from .zeroshot import class_text_embeddings, fill_template, zeroshot_metrics

    data = bench.data
    prompts = [fill_template(t, name) for name in data.class_names for t in data.templates]
    embedded, truncated = session.texts(bench.name + "-prompts", prompts)
    classes = class_text_embeddings(_lookup(prompts, embedded), data.class_names, data.templates)
    images = session.images(bench.name, data.image_paths)
    _check_dims(bench.name, images, classes)
    metrics = zeroshot_metrics(images, classes, torch.as_tensor(data.labels))
    return metrics, session.truncation_note(truncated, len(prompts))


def evaluate_linear_probe(session: ModelSession, bench: LoadedBenchmark):
    from .linear_probe import linear_probe

    train, test, spec = bench.data
    train_x = session.images(bench.name + "-train", train.image_paths)
    test_x = session.images(bench.name + "-test", test.image_paths)
    return linear_probe(train_x, torch.as_tensor(train.labels), test_x, torch.as_tensor(test.labels),
                        solver=spec.solver, l2=spec.l2), None


EVALUATORS: dict[str, Callable] = {"retrieval": evaluate_retrieval, "cra": evaluate_cra,
                                   "zeroshot": evaluate_zeroshot, "linear_probe": evaluate_linear_probe}


def _lookup(prompts: list[str], embedded: torch.Tensor) -> Callable[[list[str]], torch.Tensor]:
    """An encode_text that answers from embeddings already computed (and cached)."""
    row = {prompt: i for i, prompt in enumerate(prompts)}
    return lambda texts, **_: embedded[[row[t] for t in texts]]


def _check_dims(name: str, images: torch.Tensor, texts: torch.Tensor) -> None:
    if images.shape[-1] != texts.shape[-1]:
        raise ValueError(f"benchmark {name}: image embeddings have dimension {images.shape[-1]} but text "
                         f"embeddings {texts.shape[-1]}; the model's two sides do not match")


def _headline(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("i2t_R@1", "t2i_R@1", "top1") if k in metrics]
    return ", ".join(f"{k} {metrics[k]:.1f}" for k in keys)
