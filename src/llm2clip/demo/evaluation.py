"""Step 6 of the demo: retrieval on the held-out scenes through the eval runner
(eval/runner.py: one result schema, eval/report.py: one report writer).

LLM2CLIP's caption embeddings come from the store written in step 4 (the test captions
were embedded there once), so the LLM does not run again here.
"""
from __future__ import annotations

from pathlib import Path

from ..data.records import read_caption_records
from ..eval.embedding_cache import EmbeddingCache
from ..eval.eval_config import BenchmarkSpec, ModelSpec
from ..eval.models import load_eval_model, model_fingerprint
from ..eval.report import write_report
from ..eval.runner import EvalModel, evaluate, load_benchmark
from ..eval.stored_captions import StoredCaptionModel

STAGE2_FIELDS = ("short", "long")  # real (short) vs dense (long) caption, 50 % each
MODELS = ("baseline", "llm2clip", "llm2clip_raw_llm")
IMAGE_AND_TEXT_BATCH = 64


def evaluate_demo(folder: Path, data: dict[str, str], baseline: dict, models: dict[str, str],
                  stores: dict[str, dict[str, str]]) -> dict:
    """Short- and long-caption retrieval on the test scenes for the three models:
    {"results": the runner's benchmarks, "files": the report's files}."""
    benchmarks = [b for field in STAGE2_FIELDS for b in load_benchmark(
        BenchmarkSpec(name=f"emoji-{field}", kind="jsonl", path=data["test"], fields=[field]), skip_missing=False)]
    results = evaluate(_eval_models(data, baseline, models, stores), benchmarks, EmbeddingCache(None),
                       IMAGE_AND_TEXT_BATCH)
    files = write_report(results, folder)
    return {"results": results["benchmarks"], "files": {k: str(v) for k, v in files.items()}}


def _eval_models(data: dict[str, str], baseline: dict, models: dict[str, str],
                 stores: dict[str, dict[str, str]]) -> list[EvalModel]:
    spec = ModelSpec(name="baseline", path=baseline["model"], kind="dual_encoder")
    entries = [EvalModel("baseline", lambda: load_eval_model(spec), model_fingerprint(spec), spec.path)]
    for name in MODELS[1:]:
        entries.append(EvalModel(name, _stored_caption_loader(models[name], stores[name]["store"], data["test"]),
                                 model_fingerprint(ModelSpec(name=name, path=models[name])),
                                 f"{models[name]}, captions from {stores[name]['store']}"))
    return entries


def _stored_caption_loader(model_dir: str, store_dir: str, test_file: str):
    def load():
        from ..model import LLM2CLIP

        records = read_caption_records(test_file, caption_fields=list(STAGE2_FIELDS))[0]
        model = LLM2CLIP.from_pretrained(model_dir, load_caption_encoder=False).eval()
        return StoredCaptionModel(model, store_dir, records, STAGE2_FIELDS)
    return load
