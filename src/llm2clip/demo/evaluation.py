"""The demo's evaluation, through the eval runner (eval/runner.py: one result schema;
eval/report.py: one report writer).

Retrieval, on the test split (eval/) and on the validation split (eval/val/, where every
choice is made): emoji-short, emoji-long, emoji-neardup (near_duplicates.py) and, on the
test split, emoji-multilingual/<lang> for 13 languages (the paper's Table 3 / Fig. 4).
LLM2CLIP's caption embeddings come from the store written in the embed step (every
caption evaluated here was embedded there once), so the LLM does not run again.

Stage 1 (eval/stage1/): CRA of the raw and the tuned LLM on held-out WordNet pairs, a
held-out set of another kind than the demo's captions.
"""
from __future__ import annotations

from pathlib import Path

from ..data.records import read_caption_records
from ..eval.embedding_cache import EmbeddingCache
from ..eval.eval_config import BenchmarkSpec, ModelSpec
from ..eval.models import load_eval_model, model_fingerprint
from ..eval.report import write_report
from ..eval.runner import EvalModel, LoadedBenchmark, evaluate, load_benchmark
from ..eval.stored_captions import StoredCaptionModel
from .dataset import MULTILINGUAL_FIELDS
from .emoji_pool import LANGUAGES
from .near_duplicates import NEAR_DUPLICATE_FIELD

STAGE2_FIELDS = ("short", "long")  # real (short) vs dense (long) caption, 50 % each
MODELS = ("baseline", "llm2clip", "llm2clip_raw_llm")
IMAGE_AND_TEXT_BATCH = 64
# (data file, caption fields) whose captions the LLM2CLIP models look up in their store
EVALUATED_CAPTIONS = (("val", STAGE2_FIELDS), ("test", STAGE2_FIELDS), ("neardup_val", (NEAR_DUPLICATE_FIELD,)),
                      ("neardup_test", (NEAR_DUPLICATE_FIELD,)),
                      ("multilingual_test", MULTILINGUAL_FIELDS))


def retrieval_benchmarks(data: dict[str, str], split: str) -> list[LoadedBenchmark]:
    """The split's retrieval benchmarks, in report order (fixed before any result was seen)."""
    plan = [(f"emoji-{field}", data[split], field, None) for field in STAGE2_FIELDS]
    plan.append(("emoji-neardup", data[f"neardup_{split}"], NEAR_DUPLICATE_FIELD, None))
    if split == "test":
        plan += [(f"emoji-multilingual/{lang}", data["multilingual_test"], f"short_{lang}", lang) for lang in LANGUAGES]
    benchmarks = []
    for name, path, field, language in plan:
        spec = BenchmarkSpec(name=name, kind="jsonl", path=path, fields=[field])
        loaded = load_benchmark(spec, skip_missing=False)[0]
        benchmarks.append(LoadedBenchmark(name, loaded.kind, loaded.data, language))
    return benchmarks


def evaluate_demo(folder: Path, data: dict[str, str], baseline: dict, models: dict[str, str],
                  stores: dict[str, dict[str, str]]) -> dict:
    """The three models on the test split (`folder`) and the validation split (`folder/val`):
    {"results", "files", "val": {"results", "files"}}."""
    outcome = {}
    for split, out in (("test", folder), ("val", folder / "val")):
        results = evaluate(_eval_models(data, baseline, models, stores), retrieval_benchmarks(data, split),
                           EmbeddingCache(None), IMAGE_AND_TEXT_BATCH)
        files = write_report(results, out)
        outcome[split] = {"results": results["benchmarks"], "files": {k: str(v) for k, v in files.items()}}
    return {**outcome["test"], "val": outcome["val"]}


def evaluate_stage1(folder: Path, data: dict[str, str], stores: dict[str, dict[str, str]]) -> dict:
    """CRA (word -> its definition or synonym) on held-out WordNet pairs, raw vs stage-1 LLM."""
    spec = BenchmarkSpec(name="wordnet-cra", kind="cra", path=data["wordnet_heldout"], fields=["query", "positive"])
    entries = [EvalModel(name, _caption_encoder_loader(stores[store]["encoder"]),
                         model_fingerprint(ModelSpec(name=name, path=stores[store]["encoder"])),
                         stores[store]["encoder"])
               for name, store in (("raw_llm", "llm2clip_raw_llm"), ("stage1_llm", "llm2clip"))]
    results = evaluate(entries, load_benchmark(spec, skip_missing=False), EmbeddingCache(None), IMAGE_AND_TEXT_BATCH)
    files = write_report(results, folder)
    return {"results": results["benchmarks"], "files": {k: str(v) for k, v in files.items()}}


class CaptionEncoderModel:
    """A caption encoder as an eval model (text only: CRA)."""

    def __init__(self, encoder):
        self.caption_encoder = encoder
        self.max_text_tokens = encoder.max_tokens

    def encode_text(self, texts, batch_size: int = 32):
        return self.caption_encoder.encode(list(texts), batch_size=batch_size)  # TextEmbeddings


def _caption_encoder_loader(encoder_dir: str):
    def load():
        from ..text import CaptionEncoder

        return CaptionEncoderModel(CaptionEncoder.from_pretrained(encoder_dir, precision="fp32")
                                   .requires_grad_(False).eval())
    return load


def _eval_models(data: dict[str, str], baseline: dict, models: dict[str, str],
                 stores: dict[str, dict[str, str]]) -> list[EvalModel]:
    return [baseline_entry("baseline", baseline["model"])] + [
        stored_caption_entry(name, models[name], stores[name]["store"], data) for name in MODELS[1:]]


def baseline_entry(name: str, folder: str) -> EvalModel:
    """A DualEncoder folder as an eval model."""
    spec = ModelSpec(name=name, path=folder, kind="dual_encoder")
    return EvalModel(name, lambda: load_eval_model(spec), model_fingerprint(spec), folder)


def stored_caption_entry(name: str, model_dir: str, store_dir: str, data: dict[str, str],
                         captions: tuple = EVALUATED_CAPTIONS) -> EvalModel:
    """An LLM2CLIP folder as an eval model whose captions come from the store (no LLM loaded);
    `captions` are the (data file, caption fields) pairs the store holds for evaluation."""
    return EvalModel(name, _stored_caption_loader(model_dir, store_dir, data, captions),
                     model_fingerprint(ModelSpec(name=name, path=model_dir)), f"{model_dir}, captions from {store_dir}")


def _stored_caption_loader(model_dir: str, store_dir: str, data: dict[str, str], captions: tuple):
    def load():
        from ..model import LLM2CLIP

        records = [r for split, fields in captions
                   for r in read_caption_records(data[split], caption_fields=list(fields))[0]]
        model = LLM2CLIP.from_pretrained(model_dir, load_caption_encoder=False).eval()
        return StoredCaptionModel(model, store_dir, records)
    return load
