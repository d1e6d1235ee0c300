"""`llm2clip ablate TABLE --demo DIR`: one of the paper's ablation tables (6-12) in miniature.

Every row of the table that can run here is trained on the demo's data and models: the
demo's steps (data, baseline, stage 1, the embedding stores) are reused from DIR, or run
there first. A row applies the settings its recipe in `configs/ablations/` changes (the
keys its header names, `recipe_changes`) to the demo's configs (`configs/stage1/demo.yaml`,
`configs/stage2/demo.yaml`); the paths and model names of a recipe (`SCALE_KEYS`) are the
paper's and are replaced by the demo's. What a row shares with the demo (its stage 1, its
store, its stage 2) is reused, not trained again. Every row is evaluated through the eval
runner on the test split (short, long and near-duplicate R@1, as the demo), and stage-1
tables add CRA on the held-out test captions. Nothing is chosen here: the rows' settings
are the recipes', so the validation split is not read.

Written to `<out>/table<N>.md` and `table<N>.json` (default out: DIR/ablations), with the
scale in the header; the runs themselves under `<out>/table<N>/` and `<out>/stage1/`.
"""
from __future__ import annotations

import json
import logging
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..atomic_file import atomic_write_text
from ..config import ConfigError, load_config, packaged_config
from .dataset import data_files, step_data
from .evaluation import EVALUATED_CAPTIONS, IMAGE_AND_TEXT_BATCH, STAGE2_FIELDS, baseline_entry, \
    retrieval_benchmarks, stored_caption_entry
from .near_duplicates import NEAR_DUPLICATE_FIELD
from .run import embed_captions, stage2_config, step_baseline, step_embed, step_stage1, train_demo_stage2
from .sizes import FAST, FULL, DemoSize

log = logging.getLogger("llm2clip.demo")

HEADER = re.compile(r'^# Table (?P<table>\d+), row (?P<row>\d+|\([a-d]\)) "(?P<name>[^"]+)": '
                    r"configs/stage(?P<stage>[12])/paper\.yaml with (?P<changes>.+)$")
# A recipe's paths and model names are the paper's (an 8B LLM, its stores): the demo's
# encoder, store and tower stand in for them (the row's `text` says which encoder).
SCALE_KEYS = frozenset({"model.name", "model.caption_encoder", "data.embeddings", "model.vision"})
BENCHMARKS = (("emoji-short", "short"), ("emoji-long", "long"), ("emoji-neardup", "near-dup"))
RETRIEVAL_COLUMNS = tuple(f"{label} {d}" for _, label in BENCHMARKS for d in ("I2T", "T2I"))
# What a row's own store holds: stage 2's pairs and the test captions it is evaluated on
# (not the validation or multilingual captions: nothing is chosen here, and embedding is
# most of a stage-1 row's cost).
ROW_STORE_CAPTIONS = (("stage2", STAGE2_FIELDS), ("test", STAGE2_FIELDS), ("neardup_test", (NEAR_DUPLICATE_FIELD,)))
# Table 11 trains every row for the same few steps: an online step runs the LLM on every
# caption of the batch (about 10 s forward, several times that with LoRA, on 2 cores),
# so the demo's 600 offline steps do not fit; warmup shortened to fit the budget.
TIMED_STEPS = {"full": 10, "fast": 2}
TIMED_WARMUP = 2


@dataclass(frozen=True)
class Row:
    number: str  # the row's number in the paper's table ("3", "(a)")
    name: str = ""  # the paper's name of the row; "" = the name its recipe's header gives
    stage1: str | None = None  # the configs/ablations recipe of its stage-1 settings (None: the demo's)
    stage2: str | None = None  # ... of its stage-2 settings (None: the demo's)
    # stage-2 keys set to configs/stage2/paper.yaml's value: the paper's default row where
    # the demo's default differs (Table 8: the paper's 4-block adaptor, the demo's 1 block)
    paper_stage2: tuple[str, ...] = ()
    # the caption side: "stage1" (the row's stage-1 encoder), "raw_llm" (the demo's LLM
    # without stage 1) or "baseline" (the CLIP row: the demo's dual encoder, no stage 2)
    text: str = "stage1"


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[Row, ...]
    not_run: tuple[tuple[str, str, str], ...] = ()  # (number, paper name, why)
    stage1: bool = False  # the rows differ in stage 1: a CRA column
    timed: bool = False  # Table 11: every row for TIMED_STEPS steps, seconds per step reported
    note: str = ""


CLIP_ROW = "The demo's baseline (EfficientNet-Lite0 + MiniLM, text cut at 77 tokens) stands for the pretrained CLIP."
DIRECT_FINETUNE = ("Directly Finetune (50%)", "fine-tuning CLIP with its own text tower is not a stage of this project")
TABLES: dict[int, Table] = {
    6: Table("the text encoder", (
        Row("1", "CLIP", text="baseline"),
        Row("10", "Llama-3.1-8B-CC"),
        Row("11", "Llama3.1-8B", stage2="table6-llama-3.1-8b-without-cc", text="raw_llm"),
    ), not_run=(
        ("2",) + DIRECT_FINETUNE,
        ("3", "bge-en-icl", "a 7B model with its own pooling and prompt format, not embedded here"),
        ("4", "LLM2Vec-Llama-3-8B", "an 8B model published as two LoRA adapters, not embedded here"),
        ("5", "NV-Embed-v2", "its latent-attention pooling is its own remote code"),
        ("6-9", "Qwen2.5-0.5B-CC, Llama-3.2-1B-CC, Llama-3-8B-CC, DeepSeek-R1-Distill-Llama-8B-CC",
         "other LLMs: only SmolLM2-135M is embedded (no download at run time)"),
    ), note="The LLM rows run with the demo's SmolLM2-135M: row 10 with its stage 1, row 11 without. " + CLIP_ROW),
    7: Table("the share of dense captions (stage 2, data.dense_ratio)", (
        Row("1", "CLIP", text="baseline"),
        Row("3", stage2="table7-dense-100"),
        Row("4", stage2="table7-dense-75"),
        Row("5", "+LLM2CLIP (50%)"),
        Row("6", stage2="table7-dense-25"),
        Row("7", stage2="table7-dense-0"),
    ), not_run=(("2",) + DIRECT_FINETUNE,),
        note="Dense captions are the demo's long captions, real ones its short captions. " + CLIP_ROW),
    8: Table("the adaptor in stage 1 and stage 2", (
        Row("1", stage2="table8-stage2-no-adaptor"),
        Row("2", stage2="table8-stage2-linear1"),
        Row("3", stage2="table8-stage2-linear2"),
        Row("4", "- / Linear(x4)", paper_stage2=("model.adaptor",)),
        Row("5", stage1="table8-stage1-linear4", paper_stage2=("model.adaptor",)),
        Row("6", stage2="table8-stage2-transformer1"),
        Row("7", stage1="table8-stage1-transformer1", stage2="table8-stage1-transformer1-stage2"),
    ), stage1=True, note="Row 4 is the paper's default (a 4-block adaptor); the demo's own default is row 2's "
                         "1 block. A stage-1 adaptor has the LLM's width (576 for SmolLM2-135M)."),
    9: Table("the stage-1 method", (
        Row("1", "Lora, AvgPool, Bidirectional, Supervise Simcse"),
        Row("2", stage1="table9-unsupervised-simcse"),
        Row("3", stage1="table9-mntp-only"),
        Row("4", stage1="table9-mntp-supervised-simcse"),
        Row("5", stage1="table9-causal"),
        Row("6", stage1="table9-eos-pooling"),
        Row("7", stage1="table9-frozen-linear-adaptor"),
    ), stage1=True, note="Each row trains its own stage 1 (the demo's steps and batch) and embeds its own "
                         "store; stage 2 is the demo's. MNTP masks the training batch's captions (the paper "
                         "used Wikitext-103)."),
    10: Table("how the LLM joins CLIP (stage 2, model.loss_terms)", (
        Row("CLIP", "CLIP", text="baseline"),
        Row("(a)", "CL(LLM, CLIP-V)"),
    ), not_run=(
        ("Directly Finetune",) + DIRECT_FINETUNE[1:],
        ("(b)", "CL(LLM, CLIP-V) + CL(CLIP-T, CLIP-V)",
         "not wired into the miniature yet: it needs a concat store (`llm2clip concat-encoder` over the "
         "baseline) and an evaluation per loss term"),
        ("(c)", "(b) + CL(CLIP-T, LLM)", "as (b) (its recipe is table10-c-text-alignment)"),
        ("(d)", "(b) + CL(Cat(CLIP-T, LLM), CLIP-V)", "as (b)"),
    ), note=CLIP_ROW),
    11: Table("the text side's training (stage 2, train.mode)", (
        Row("2", stage2="table11-base-llm-offline", text="raw_llm"),
        Row("3", stage2="table11-cc-lora"),
        Row("4", stage2="table11-cc-frozen-online"),
        Row("5", "Llama-3.1-8B-CC, LLM Frozen + Linear Adaptor + Offline-loading"),
    ), not_run=(
        ("1", "Llama-3.1-8B, LLM LoRA", "not expressible: online_lora trains the LoRA of a stage-1 adapter folder "
                                        "and refuses a base LLM, which has none"),
    ), timed=True, note="Every row trains the same number of steps of the same batch (not the paper's largest "
                        "batch per row); s/step is the median wall time of a step after the first."),
    12: Table("stage-1 data", (), not_run=(
        ("1-5", "Set1/Set2 (DreamLIP 15M subsets), E5", "the data sets are not part of this project"),
    )),
}


# ------------------------------------------------------------------ recipes
def recipe_changes(stem: str) -> tuple[dict, dict]:
    """({table, row, name, stage}, {key: value}) of a configs/ablations recipe's first line,
    e.g. '# Table 7, row 3 "+LLM2CLIP (100%)": configs/stage2/paper.yaml with data.dense_ratio: 1.0'."""
    path = packaged_config(f"ablations/{stem}.yaml")
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = HEADER.match(first)
    if not match:
        raise ConfigError(f"{path}: its first line does not name a table, row and its changes: {first!r}")
    changes = {key.strip(): yaml.safe_load(value) for key, value in
               (item.split(":", 1) for item in match["changes"].split("; "))}
    return {k: match[k] for k in ("table", "row", "name", "stage")}, changes


def as_overrides(changes: dict) -> tuple[str, ...]:
    """{key: value} -> ("key=<value as one-line YAML>", ...), skipping SCALE_KEYS."""
    return tuple(f"{key}={json.dumps(value)}" for key, value in changes.items() if key not in SCALE_KEYS)


def row_settings(table_number: int, row: Row) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(the row's paper name, its stage-1 overrides, its stage-2 overrides)."""
    name, settings = row.name, {1: (), 2: ()}
    for stage, stem in ((1, row.stage1), (2, row.stage2)):
        if stem is None:
            continue
        header, changes = recipe_changes(stem)
        if (int(header["table"]), header["row"], int(header["stage"])) != (table_number, row.number, stage):
            raise ConfigError(f"configs/ablations/{stem}.yaml is Table {header['table']} row {header['row']} "
                              f"(stage {header['stage']}), not Table {table_number} row {row.number}")
        name = name or header["name"]
        settings[stage] = as_overrides(changes)
    if row.paper_stage2:
        paper = yaml.safe_load(packaged_config("stage2/paper.yaml").read_text(encoding="utf-8"))
        settings[2] += as_overrides({key: _dotted(paper, key) for key in row.paper_stage2})
    return name, settings[1], settings[2]


def _dotted(data: dict, key: str):
    for part in key.split("."):
        data = data[part]
    return data


def demo_stage1_adjustments(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """What the demo's stage-1 config must also change for a row to be valid: the demo
    mixes WordNet pairs into stage 1, and unsupervised SimCSE pairs a caption with itself,
    so it has no use for them (the paper's recipe has none either)."""
    if 'train.simcse="unsupervised"' in overrides:
        return ("data.text_pair_ratio=0",)
    return ()


# ------------------------------------------------------------------ running
@dataclass
class Demo:
    """The demo folder's finished steps."""
    folder: Path
    size: DemoSize
    data: dict[str, str]
    baseline: dict
    stage1: dict
    stores: dict[str, dict[str, str]]


def prepare_demo(folder: Path, fast: bool) -> Demo:
    """The demo's steps the ablations build on, reused from `folder` or run there first."""
    size = FAST if fast else FULL
    check_demo_folder(folder, fast)
    data = step_data(folder / "data", size)
    baseline = step_baseline(folder / "baseline", data, size)
    stage1 = step_stage1(folder / "stage1", data, size)
    stores = step_embed(folder / "embeddings", data, stage1["encoder"])
    return Demo(folder, size, data, baseline, stage1, stores)


def check_demo_folder(folder: Path, fast: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--demo {folder}: not a folder")
    # a new demo folder may already hold the default --out (ablations/), made by the command
    if folder.is_dir() and any(p.name != "ablations" for p in folder.iterdir()) and not (folder / "data").is_dir():
        raise ConfigError(f"--demo {folder}: not an `llm2clip demo` folder (no data/); give a demo's --out folder, "
                          "or a new one to run the demo's steps in")
    test_file = data_files(folder / "data")["test"]
    if test_file.is_file():
        n_test = sum(1 for line in test_file.read_text(encoding="utf-8").splitlines() if line.strip())
        made_fast = n_test == FAST.n_test
        if made_fast != fast:
            raise ConfigError(f"--demo {folder}: made {'with' if made_fast else 'without'} --fast ({n_test} test "
                              f"scenes); run ablate {'with' if made_fast else 'without'} --fast")


def run_table(number: int, demo_folder: Path, out: Path | None = None, fast: bool = False,
              rows: tuple[str, ...] | None = None, stage1_steps: int | None = None) -> dict:
    """Every runnable row of paper table `number` (or only `rows`, by their numbers)."""
    from ..eval.embedding_cache import EmbeddingCache
    from ..eval.report import write_report
    from ..eval.runner import evaluate

    table = table_of(number)
    chosen = select_rows(table, number, rows)
    demo = prepare_demo(demo_folder, fast) if chosen else None
    out = Path(out) if out else demo_folder / "ablations"
    steps1 = stage1_steps or (demo.size.stage1_steps if demo else None)
    built = [build_row(number, table, row, demo, out, steps1) for row in chosen]
    measured = {}
    if built:
        benchmarks = [b for b in retrieval_benchmarks(demo.data, "test") if b.name in dict(BENCHMARKS)]
        results = evaluate([b["entry"] for b in built], benchmarks, EmbeddingCache(None), IMAGE_AND_TEXT_BATCH)
        write_report(results, out / f"table{number}" / "eval")
        measured = results["benchmarks"]
    summary = table_summary(number, table, built, measured, demo, out, steps1, fast)
    atomic_write_text(out / f"table{number}.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / f"table{number}.md", render_table(summary))
    return summary


def table_of(number: int) -> Table:
    if number not in TABLES:
        raise ConfigError(f"no ablation table {number}: the paper's ablations are Tables "
                          f"{', '.join(map(str, TABLES))}")
    return TABLES[number]


def select_rows(table: Table, number: int, rows: tuple[str, ...] | None) -> list[Row]:
    if rows is None:
        return list(table.rows)
    known = {row.number: row for row in table.rows}
    unknown = [r for r in rows if r not in known]
    if unknown:
        raise ConfigError(f"--rows {','.join(unknown)}: Table {number} has no runnable row of that number "
                          f"(runnable: {', '.join(known) or 'none'})")
    return [row for row in table.rows if row.number in rows]


def build_row(number: int, table: Table, row: Row, demo: Demo, out: Path, stage1_steps: int) -> dict:
    """Train what the row does not share with the demo; its eval entry and settings."""
    name, stage1_overrides, stage2_overrides = row_settings(number, row)
    label = f"{row.number} {name}"
    built = {"number": row.number, "row": name, "stage1_settings": list(stage1_overrides),
             "stage2_settings": list(stage2_overrides)}
    if row.text == "baseline":
        return {**built, "entry": baseline_entry(label, demo.baseline["model"]), "model": demo.baseline["model"]}
    encoder, store, captions, cra = text_side(row, demo, out, stage1_overrides, stage1_steps)
    if table.timed:
        stage2_overrides += (f"train.max_steps={TIMED_STEPS['fast' if demo.size is FAST else 'full']}",
                             f"train.warmup_steps={TIMED_WARMUP}")
    run = stage2_run(number, row, demo, out, {"encoder": encoder, "store": store}, stage2_overrides)
    model = train_demo_stage2(run, demo.data, {"encoder": encoder, "store": store}, demo.size, stage2_overrides)
    if 'train.mode="online_lora"' in stage2_overrides:
        # stage 2 trained the LLM's LoRA, so the store's embeddings are no longer this
        # model's: its captions are embedded by the caption encoder it saved
        entry = llm2clip_entry(label, model)
    else:
        entry = stored_caption_entry(label, model, store, demo.data, captions)
    return {**built, "entry": entry, "model": model,
            "stage2_run": str(run), "encoder": encoder, "store": store, "cra_top1": cra,
            "seconds_per_step": seconds_per_step(run / "metrics.jsonl", demo.size.stage2_batch)}


def llm2clip_entry(name: str, model_dir: str):
    from ..eval.eval_config import ModelSpec
    from ..eval.models import load_eval_model, model_fingerprint
    from ..eval.runner import EvalModel

    spec = ModelSpec(name=name, path=model_dir)
    return EvalModel(name, lambda: load_eval_model(spec), model_fingerprint(spec), model_dir)


def text_side(row: Row, demo: Demo, out: Path, overrides: tuple[str, ...], steps: int):
    """(encoder folder, store, the captions it holds, CRA top-1 of the encoder) of the row."""
    cra = demo.stage1["cra"]
    if row.text == "raw_llm":
        return (demo.stores["llm2clip_raw_llm"]["encoder"], demo.stores["llm2clip_raw_llm"]["store"],
                EVALUATED_CAPTIONS, cra["before"]["top1"])  # CRA before stage 1 is the raw LLM's
    if not overrides and steps == demo.size.stage1_steps:  # the demo's own stage 1
        return demo.stage1["encoder"], demo.stores["llm2clip"]["store"], EVALUATED_CAPTIONS, cra["after"]["top1"]
    # stage-1 runs are shared by every table and row with the same settings
    folder = out / f"stage1-{steps}steps" / (row.stage1 or "demo-default")
    overrides = overrides + demo_stage1_adjustments(overrides) + (f"train.max_steps={steps}",)
    trained = step_stage1(folder, demo.data, demo.size, overrides)
    store = folder / "store"
    embed_captions(trained["encoder"], demo.data, ROW_STORE_CAPTIONS, store)
    return trained["encoder"], str(store), ROW_STORE_CAPTIONS, trained["cra"]["after"]["top1"]


def stage2_run(number: int, row: Row, demo: Demo, out: Path, store: dict, overrides: tuple[str, ...]) -> Path:
    """The row's stage-2 folder: the demo's own run when the row's config is the demo's."""
    demo_runs = {demo.stores[name]["store"]: demo.folder / "stage2" / name for name in demo.stores}
    own = out / f"table{number}" / _slug(row.number)
    if store["store"] in demo_runs:
        demo_run = demo_runs[store["store"]]
        if stage2_config(demo_run, demo.data, store, demo.size, overrides) == \
                stage2_config(demo_run, demo.data, store, demo.size):
            return demo_run
    return own


def _slug(text: str) -> str:
    return "row-" + re.sub(r"[^a-z0-9]+", "", text.lower())


def seconds_per_step(metrics_file: Path, batch: int) -> float | None:
    """The median seconds of a step after the first (which also warms up), from the log's
    samples per second (a short last batch of an epoch is one of many, hence the median)."""
    if not metrics_file.is_file():
        return None
    logged = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    rates = [r["samples_per_s"] for r in logged if "samples_per_s" in r]
    times = [batch / rate for rate in (rates[1:] or rates)]
    return round(statistics.median(times), 4) if times else None


# ------------------------------------------------------------------ the table
def table_summary(number: int, table: Table, built: list[dict], measured: dict, demo: Demo | None, out: Path,
                  stage1_steps: int | None, fast: bool) -> dict:
    columns = list(RETRIEVAL_COLUMNS) + (["CRA"] if table.stage1 else []) + (["s/step"] if table.timed else [])
    rows = []
    for b in built:
        label = f"{b['number']} {b['row']}"
        cells = {f"{short} {d.upper()}": measured[bench]["results"][label][f"{d}_R@1"]
                 for bench, short in BENCHMARKS for d in ("i2t", "t2i")}
        if table.stage1:
            cells["CRA"] = b.get("cra_top1")
        if table.timed:
            cells["s/step"] = b.get("seconds_per_step")
        entry = {k: v for k, v in b.items() if k not in ("entry", "cra_top1", "seconds_per_step")}
        rows.append({**{k: _relative(v, demo.folder) for k, v in entry.items()}, "cells": cells})
    return {"table": number, "title": table.title, "fast": fast, "scale": scale(demo, table, stage1_steps),
            "note": table.note, "columns": columns, "rows": rows,
            "not_run": [{"number": n, "row": name, "why": why} for n, name, why in table.not_run]}


def scale(demo: Demo | None, table: Table, stage1_steps: int | None) -> str:
    if demo is None:
        return "nothing run"
    s = demo.size
    stage2 = (f"{TIMED_STEPS['fast' if s is FAST else 'full']} steps of {s.stage2_batch} pairs" if table.timed else
              f"{s.stage2_epochs} epochs of {s.n_stage2} scenes + {s.n_stage2_families} near-duplicate families "
              f"(short or long caption, batch {s.stage2_batch})")
    return (f"the demo's {'--fast ' if s is FAST else ''}size: EfficientNet-Lite0 (frozen, features cached) + "
            f"SmolLM2-135M; stage 1 {stage1_steps} steps of {s.stage1_batch} caption pairs "
            f"({s.n_train} scenes, WordNet pairs at {s.text_pair_ratio:.0%}); stage 2 {stage2}; "
            f"test split: {s.n_test} scenes, {s.n_test_families} near-duplicate family(ies); "
            "R@1 (%) on the test split, CRA top-1 (%) on the test scenes' captions 1 and 2")


def render_table(summary: dict) -> str:
    columns = summary["columns"]
    lines = [f"# Table {summary['table']} in miniature: {summary['title']}", "",
             f"Scale: {summary['scale']}.", ""]
    if summary["note"]:
        lines += [summary["note"], ""]
    if summary["rows"]:
        lines += ["| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for row in summary["rows"]:
            cells = [_cell(row["cells"][c], c) for c in columns]
            lines.append(f"| {row['number']} {row['row']} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["not_run"]:
        lines += ["Not run here:", ""] + [f"- {r['number']} {r['row']}: {r['why']}" for r in summary["not_run"]]
    return "\n".join(lines) + "\n"


def _cell(value, column: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if column == "s/step" else f"{value:.1f}"


def _relative(value, root: Path):
    """A path under `root` (the demo folder) relative to it; anything else as it is."""
    if isinstance(value, str) and "/" in value and Path(value).resolve().is_relative_to(root.resolve()):
        return str(Path(value).resolve().relative_to(root.resolve()))
    return value
