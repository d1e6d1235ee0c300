"""The demo's settings chosen on the validation split, never on the test split.

    python -m llm2clip.demo.validation --demo runs/demo [--fast]

runs after a finished demo (it reuses its data, stage-1 encoder and stores) and trains,
for each side, the variants of the grid below on the stage-2 pairs, then scores every
variant on the validation benchmarks (emoji-short, emoji-long, emoji-neardup of the
validation scenes). The score is the mean R@1 with ties broken at random over the six
numbers (three benchmarks, image->text and text->image): the tie-free figure, so a 77-token
tower that sees several captions as one text is neither helped nor hurt by the tie rule.
Each side takes its best variant; `sizes.py` and `configs/stage2/demo.yaml` hold the
choice. Written to `<demo>/validation/`: `sweep.json` (every variant's six numbers) and
`sweep.md`. The test split is never read here.

The two sides get the same step budgets: the baseline's projections train for `steps`
steps of 64 pairs, LLM2CLIP's projection + adaptor for the same number of steps.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..atomic_file import atomic_write_text
from .dataset import data_files
from .evaluation import IMAGE_AND_TEXT_BATCH, STAGE2_FIELDS, baseline_entry, retrieval_benchmarks, stored_caption_entry
from .run import train_demo_stage2
from .sizes import FAST, FULL, DemoSize

log = logging.getLogger("llm2clip.demo")

STEP_BUDGETS = (150, 300, 600)  # steps of 64 pairs, both sides
ADAPTOR_BLOCKS = (1, 2)  # LLM2CLIP's adaptor depth
FAST_GRID = {"steps": (20,), "blocks": (1, 2)}  # --fast: the sweep's plumbing in seconds


def sweep(demo: Path, size: DemoSize, steps: tuple[int, ...] = STEP_BUDGETS,
          blocks: tuple[int, ...] = ADAPTOR_BLOCKS) -> dict:
    from ..baseline import train_demo_baseline
    from ..eval.embedding_cache import EmbeddingCache
    from ..eval.runner import evaluate

    data = {k: str(v) for k, v in data_files(demo / "data").items()}
    store = {"store": str(demo / "embeddings" / "llm2clip"), "encoder": str(demo / "stage1" / "final")}
    out = demo / "validation"
    pairs = _count_rows(data["stage2"])
    entries = []
    for n in steps:
        name = f"baseline-{n}steps"
        folder = out / name
        if not (folder / "dual_encoder.json").is_file():
            train_demo_baseline(data["stage2"], folder, fields=STAGE2_FIELDS, steps=n)
        entries.append(baseline_entry(name, str(folder)))
        epochs = max(1, round(n * size.stage2_batch / pairs))  # the same number of steps of the same batch
        for b in blocks:
            name = f"llm2clip-{b}block-{n}steps"
            model = train_demo_stage2(out / name, data, store, size,
                                      (f"train.epochs={epochs}", f"model.adaptor.num_blocks={b}"))
            entries.append(stored_caption_entry(name, model, store["store"], data))
    results = evaluate(entries, retrieval_benchmarks(data, "val"), EmbeddingCache(None), IMAGE_AND_TEXT_BATCH)
    table = {entry.name: _scores(results["benchmarks"], entry.name) for entry in entries}
    chosen = {side: max((n for n in table if n.startswith(side + "-")), key=lambda n: table[n]["mean"])
              for side in ("baseline", "llm2clip")}
    summary = {"criterion": "mean R@1 (random ties) over val emoji-short/long/neardup, I2T and T2I",
               "stage2_pairs": pairs, "variants": table, "chosen": chosen}
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "sweep.md", render(summary))
    return summary


def _scores(benchmarks: dict, model: str) -> dict:
    cells = {f"{name[6:]} {d}": benchmarks[name]["results"][model][f"{d}_R@1_random_ties"]
             for name in ("emoji-short", "emoji-long", "emoji-neardup") for d in ("i2t", "t2i")}
    return {**cells, "mean": round(sum(cells.values()) / len(cells), 2)}


def render(summary: dict) -> str:
    columns = [c for c in next(iter(summary["variants"].values())) if c != "mean"]
    lines = [f"Validation sweep ({summary['criterion']}; {summary['stage2_pairs']} stage-2 pairs)", "",
             "| variant | " + " | ".join(columns) + " | mean |", "|---|" + "---|" * (len(columns) + 1)]
    for name, row in summary["variants"].items():
        mark = " (chosen)" if name in summary["chosen"].values() else ""
        lines.append(f"| {name}{mark} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + f" | {row['mean']:.2f} |")
    return "\n".join(lines) + "\n"


def _count_rows(path: str) -> int:
    return sum(1 for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", required=True, type=Path, help="a finished `llm2clip demo --out` folder")
    parser.add_argument("--fast", action="store_true", help="the folder is a --fast demo: a two-variant grid")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    grid = FAST_GRID if args.fast else {"steps": STEP_BUDGETS, "blocks": ADAPTOR_BLOCKS}
    summary = sweep(args.demo, FAST if args.fast else FULL, grid["steps"], grid["blocks"])
    print(render(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
