"""`llm2clip demo`: the whole method on embedded real models and data, on a laptop CPU.

Steps (each reused when its output already exists, so a second run is instant and a
killed run resumes):
  1. data      emoji scenes (Noto Color Emoji + CLDR names) with several captions each,
               rendered to PNG; train / validation / test splits, near-duplicate families,
               WordNet pairs (dataset.py)
  2. baseline  "pretrained CLIP" in miniature: the ImageNet EfficientNet-Lite0 image tower
               aligned with the MiniLM sentence encoder, its text cut at 77 tokens like CLIP
  3. stage1    SmolLM2-135M fine-tuned with LoRA + supervised SimCSE on captions and WordNet
               pairs; caption retrieval accuracy (CRA) on held-out scenes before and after
  4. embed     every caption stage 2 and the evaluation use, once, by the tuned LLM and
               (for the Table 6 ablation) by the raw LLM
  5. stage2    offline against each store: the EfficientNet-Lite0 tower frozen (its features
               computed once: tower training does not fit 2 CPU cores in minutes), the
               projection + adaptor trained with the baseline's step budget
  6. eval      CRA on held-out WordNet pairs; retrieval (short, long, near-duplicate,
               13 languages) on the test and validation splits: baseline vs LLM2CLIP vs
               LLM2CLIP on the raw LLM, through the eval runner (evaluation.py)
  7. search    the test images indexed by the baseline and by LLM2CLIP, searched with long
               queries that differ from their neighbours past 77 tokens (search_step.py)
Every number is measured by the run; nothing is read from a stored result.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from ..atomic_file import atomic_write_text
from ..config import load_config, packaged_config
from .dataset import step_data
from .evaluation import EVALUATED_CAPTIONS, MODELS, STAGE2_FIELDS, evaluate_demo, evaluate_stage1
from .search_step import step_search
from .sizes import FAST, FULL, DemoSize
from .summary import render_summary

log = logging.getLogger("llm2clip.demo")

STAGE1_FIELDS = ("short", "short_alt", "spatial")  # CRA pairs captions 1 and 2
# (data file, caption fields) embedded once per caption encoder: stage 2's pairs and every
# caption the evaluation retrieves with
EMBEDDED_CAPTIONS = (("stage2", STAGE2_FIELDS),) + EVALUATED_CAPTIONS

def run_demo(out: str | os.PathLike, fast: bool = False) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(out)
    size = FAST if fast else FULL
    began = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[name] = round((time.perf_counter() - start) / 60, 2)
        return result

    data = timed("data", step_data, out / "data", size)
    baseline = timed("baseline", step_baseline, out / "baseline", data, size)
    stage1 = timed("stage1", step_stage1, out / "stage1", data, size)
    stores = timed("embed", step_embed, out / "embeddings", data, stage1["encoder"])
    models = timed("stage2", step_stage2, out / "stage2", data, stores, size)
    stage1["eval"] = timed("eval_stage1", evaluate_stage1, out / "eval" / "stage1", data, stores)
    evaluation = timed("eval", evaluate_demo, out / "eval", data, baseline, models, stores)
    search = timed("search", step_search, out / "eval", data, baseline, models)
    # summary.json holds what the run measured, with paths relative to `out`, so two runs
    # from fresh folders write the same file; the wall-clock times go to timings.json
    summary = {"fast": fast, "size": asdict(size), "data": _construction(data),
               "stage1": _relative(stage1, out), "eval": _relative(evaluation, out), "search": _relative(search, out)}
    _write_json(out / "summary.json", summary)
    times = {"minutes": timings, "total_minutes": round((time.perf_counter() - began) / 60, 2)}
    _write_json(out / "timings.json", times)
    print(render_summary({**summary, **times}))
    return {**summary, **times}


# ------------------------------------------------------------------ 2. baseline
def step_baseline(folder: Path, data: dict[str, str], size: DemoSize) -> dict:
    """EfficientNet-Lite0 + MiniLM (text cut at 77 tokens) aligned on the stage-2 scenes,
    each image paired with its short and its long caption, as CLIP pretraining would."""
    from ..baseline import train_demo_baseline

    if (folder / "dual_encoder.json").is_file():
        log.info("baseline: reusing %s", folder)
        return {"model": str(folder)}
    train_demo_baseline(data["stage2"], folder, fields=STAGE2_FIELDS, steps=size.baseline_steps)
    return {"model": str(folder)}


# ------------------------------------------------------------------ 3. stage 1
def step_stage1(folder: Path, data: dict[str, str], size: DemoSize, overrides: tuple[str, ...] = ()) -> dict:
    """Fine-tune the embedded LLM (the demo's config + `overrides`); CRA before/after on
    held-out captions 1 and 2."""
    from ..train.checkpoint import list_checkpoints
    from ..train.stage1 import train_stage1

    result_file = folder / "cra.json"
    if result_file.is_file() and (folder / "final" / "caption_encoder.json").is_file():
        log.info("stage1: reusing %s", folder)
        return {"encoder": str(folder / "final"), "cra": json.loads(result_file.read_text())}
    cfg = stage1_config(folder, data, size, overrides)
    resume = bool(list_checkpoints(folder / "checkpoints"))
    summary = train_stage1(cfg, resume=resume)
    return {"encoder": summary["encoder"], "cra": summary["cra"]}


def stage1_config(folder: Path, data: dict[str, str], size: DemoSize, overrides: tuple[str, ...] = ()):
    from ..train.stage1_config import Stage1Config

    fields = "[" + ", ".join(STAGE1_FIELDS) + "]"
    return load_config(Stage1Config, packaged_config("stage1/demo.yaml"), [
        f"data.train={data['train']}", f"data.caption_fields={fields}",
        f"eval.cra={data['test']}", f"eval.cra_fields={fields}",
        f"train.output_dir={folder}", f"train.max_steps={size.stage1_steps}",
        f"train.batch_size={size.stage1_batch}", f"data.text_pairs={data['wordnet_train']}",
        f"data.text_pair_ratio={size.text_pair_ratio}", *overrides,
    ])


# ------------------------------------------------------------------ 4. embed
def step_embed(folder: Path, data: dict[str, str], tuned_encoder: str) -> dict[str, dict[str, str]]:
    """One store per caption encoder over the stage-2 training and test captions.

    The LLM runs under bf16 autocast on CPUs with hardware bf16 (AMX, AVX512-BF16: ~1.8x
    the fp32 speed here, cosine to the fp32 embedding >= 0.9999), else in fp32; the store
    is fp16 either way.

    The raw-LLM encoder is the base model with the demo's settings and a fresh LoRA
    whose B matrices are zero (peft's initialisation), i.e. exactly the raw LLM, saved
    in the small adapter format so it has a folder and an identity like the tuned one.
    """
    from ..train.stage1 import load_encoder

    raw_folder = folder / "raw_llm_encoder"
    if not (raw_folder / "caption_encoder.json").is_file():
        cfg = stage1_config(folder, data, FAST)
        load_encoder(cfg).save_pretrained(raw_folder)
    stores = {}
    for name, encoder_dir in (("llm2clip", tuned_encoder), ("llm2clip_raw_llm", str(raw_folder))):
        embed_captions(encoder_dir, data, EMBEDDED_CAPTIONS, folder / name)
        stores[name] = {"store": str(folder / name), "encoder": encoder_dir}
    return stores


def embed_captions(encoder_dir: str, data: dict[str, str], captions: tuple, store: Path) -> None:
    """One store of `captions` ((data file, caption fields) pairs) by the encoder, unless
    `store` already holds one."""
    from ..data.records import read_caption_records
    from ..devices import cpu_has_native_bf16
    from ..embeddings import write_embedding_store
    from ..text import CaptionEncoder

    if (store / "store.json").is_file():
        log.info("embed: reusing %s", store)
        return
    records = []
    for split, fields in captions:
        records += read_caption_records(data[split], caption_fields=list(fields))[0]
    precision = "bf16" if cpu_has_native_bf16() else "fp32"
    encoder = CaptionEncoder.from_pretrained(encoder_dir, precision=precision).requires_grad_(False).eval()
    log.info("embed: %d captions with %s (%s)", sum(len(r.captions) for r in records), encoder_dir, precision)
    write_embedding_store(encoder, records, store, dtype="fp16", shard_size=256, batch_size=16, show_progress=True)


# ------------------------------------------------------------------ 5. stage 2
def step_stage2(folder: Path, data: dict[str, str], stores: dict[str, dict[str, str]], size: DemoSize) -> dict:
    return {name: train_demo_stage2(folder / name, data, store, size) for name, store in stores.items()}


def train_demo_stage2(run: Path, data: dict[str, str], store: dict[str, str], size: DemoSize,
                      overrides: tuple[str, ...] = ()) -> str:
    """Stage 2 offline against one store with the demo's config (+ `overrides`), reused or
    resumed when `run` already holds it; returns its final/ folder."""
    from ..train.checkpoint import list_checkpoints
    from ..train.stage2 import train_stage2

    final = run / "final"
    if (final / "llm2clip.json").is_file():
        log.info("stage2: reusing %s", final)
        return str(final)
    cfg = stage2_config(run, data, store, size, overrides)
    return train_stage2(cfg, resume=bool(list_checkpoints(run / "checkpoints")))["model"]


def stage2_config(run: Path, data: dict[str, str], store: dict[str, str], size: DemoSize,
                  overrides: tuple[str, ...] = ()):
    from ..train.stage2_config import Stage2Config

    return load_config(Stage2Config, packaged_config("stage2/demo.yaml"), [
        f"model.caption_encoder={store['encoder']}", f"data.train={data['stage2']}",
        f"data.embeddings={store['store']}", f"train.output_dir={run}",
        f"train.epochs={size.stage2_epochs}", f"train.batch_size={size.stage2_batch}", *overrides,
    ])


# ------------------------------------------------------------------ summary
def _construction(data: dict[str, str]) -> dict:
    return json.loads(Path(data["construction"]).read_text())


def _relative(value, root: Path):
    """`value` with every path under `root` (a string naming a file or folder) relative to it."""
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    if isinstance(value, str) and os.sep in value and Path(value).resolve().is_relative_to(root.resolve()):
        return str(Path(value).resolve().relative_to(root.resolve()))
    return value


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
