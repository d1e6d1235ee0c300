"""`llm2clip` command line: stage1, embed, stage2, eval, index, search, export-onnx, demo, ablate."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

from .arg_types import positive_int
from .allocator import limit_heap_retention
from .atomic_file import WriteError, atomic_write_text
from .config import ConfigError, load_config
from .output_paths import require_writable_file, require_writable_folder
from .text.pooling import POOLINGS
from .train.runtime import TrainingError

# Bad input (configs, data, model names, paths), a missing optional package, and failed runs
# raise these families with a message that names the file/key (ConfigError, DataError,
# StoreError are ValueErrors); print it as one line. Anything else (KeyError, TypeError,
# RuntimeError, ...) is a bug: keep its traceback.
EXPECTED_ERRORS = (ValueError, OSError, ImportError, TrainingError, WriteError)


def main(argv: list[str] | None = None) -> int:
    limit_heap_retention()  # before any tensor exists (allocator.py: glibc keeps freed activations)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as err:  # a clear message, not a traceback
        if os.environ.get("LLM2CLIP_DEBUG"):
            raise
        print(f"llm2clip: error: {one_line(err)}", file=sys.stderr)
        return 2


def one_line(err: BaseException) -> str:
    """The message of an expected error on one line. An OSError says which file; an error
    re-raised from a DataLoader worker carries the worker's traceback text: keep its last line."""
    text = str(err)
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or text}"
    if "Traceback (most recent call last)" in text:
        last = text.strip().splitlines()[-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    return " ".join(text.split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm2clip", description=__doc__)
    sub = parser.add_subparsers(title="commands")

    _add_training_command(sub, "stage1", "fine-tune an LLM into a caption embedding model", "train.lr=1e-4", _stage1)

    from .embeddings.cli import add_embed_parser

    add_embed_parser(sub)

    from .search.cli import add_search_parsers

    add_search_parsers(sub)  # index, search

    from .export.cli import add_export_parser

    add_export_parser(sub)

    _add_training_command(sub, "stage2", "post-train a CLIP vision tower + adaptor against the caption encoder",
                          "train.mode=online_frozen", _stage2)

    p = sub.add_parser("eval", help="evaluate models on benchmarks (or `eval cra` for the caption encoder alone)")
    p.add_argument("--config", help="YAML recipe of models and benchmarks, e.g. configs/eval/example.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set output_dir=runs/eval2 (repeatable)")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop and count benchmark images that are missing instead of stopping")
    p.add_argument("--no-cache", action="store_true", help="recompute every embedding")
    p.set_defaults(run=_eval)
    eval_sub = p.add_subparsers(title="benchmarks")
    c = eval_sub.add_parser("cra", help="caption-to-caption retrieval accuracy (paper Table 1)")
    c.add_argument("--model", required=True, help="caption encoder folder, embedded name, HF id or path")
    c.add_argument("--data", required=True, help="Karpathy JSON or CSV/TSV/JSONL caption records")
    c.add_argument("--fields", nargs="+", help="caption fields, in order (captions 1 and 2 form the pair)")
    c.add_argument("--limit", type=positive_int, help="use only the first N records")
    c.add_argument("--pooling", choices=tuple(POOLINGS))
    c.add_argument("--instruction", help="instruction prepended to every caption (attended, not pooled)")
    c.add_argument("--causal", action="store_true", help="causal instead of bidirectional attention")
    c.add_argument("--max-length", type=positive_int)
    c.add_argument("--batch-size", type=positive_int, default=64)
    c.add_argument("--out", help="also write the result as JSON here")
    c.set_defaults(run=_eval_cra)

    p = sub.add_parser("concat-encoder", help="a caption encoder = stage-1 LLM embedding ‖ CLIP text embedding, "
                       "usable wherever a caption-encoder folder is: one adaptor over it (concat, single head), "
                       "or Table 10's method (d) with model.loss_terms=[llm, clip_text, cat]")
    p.add_argument("--llm", required=True, help="the stage-1 caption encoder folder (or any LLM name/id)")
    p.add_argument("--clip-text", required=True, help="the original CLIP: an HF CLIP/SigLIP id or folder, "
                   "or a DualEncoder folder")
    p.add_argument("--out", required=True, help="folder to write (concat_encoder.json + llm/)")
    p.set_defaults(run=_concat_encoder)

    p = sub.add_parser("demo", help="the method end to end on embedded models and data, on a CPU")
    p.add_argument("--out", default="runs/demo", help="output folder (finished steps are reused)")
    p.add_argument("--fast", action="store_true", help="a ~2-minute smoke version")
    p.set_defaults(run=_demo)

    p = sub.add_parser("ablate", help="one of the paper's ablation tables (6-12) in miniature on a demo folder")
    p.add_argument("table", type=int, help="the paper's table number, 6 to 12")
    p.add_argument("--demo", required=True, help="an `llm2clip demo --out` folder (missing steps are run there)")
    p.add_argument("--out", help="folder for table<N>.md / .json and the runs (default: DEMO/ablations)")
    p.add_argument("--fast", action="store_true", help="on a `demo --fast` folder: the table in seconds")
    p.add_argument("--rows", type=_row_numbers, help="only these rows, by their numbers in the paper's table, "
                   "e.g. --rows 1,2,3,7")
    p.add_argument("--stage1-steps", type=positive_int, help="stage-1 steps of the rows that train a stage 1 "
                   "(default: the demo's; another number retrains the default row too)")
    p.set_defaults(run=_ablate)
    return parser


def _row_numbers(text: str) -> tuple[str, ...]:
    rows = tuple(r.strip() for r in text.split(",") if r.strip())
    if not rows:
        raise argparse.ArgumentTypeError("expected row numbers, e.g. 1,2,3")
    return rows


def _add_training_command(sub, name: str, help_text: str, example: str, run) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--config", required=True, help=f"YAML recipe, e.g. configs/{name}/paper.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config key, e.g. --set {example} (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint")
    p.set_defaults(run=run)


def _stage1(args) -> int:
    from .train.stage1 import train_stage1
    from .train.stage1_config import Stage1Config

    cfg = load_config(Stage1Config, args.config, args.overrides)
    if not cfg.data.train:
        raise ConfigError(f"{args.config}: data.train is required (a caption records file)")
    summary = train_stage1(cfg, resume=args.resume, config_file=args.config)
    if "encoder" in summary:
        print(json.dumps(summary, indent=2))
    return 0


def _stage2(args) -> int:
    from .train.stage2 import train_stage2
    from .train.stage2_config import Stage2Config

    cfg = load_config(Stage2Config, args.config, args.overrides)
    summary = train_stage2(cfg, resume=args.resume, config_file=args.config)
    if "model" in summary:
        print(json.dumps(summary, indent=2))
    return 0


def _eval(args) -> int:
    from .eval.eval_config import EvalConfig
    from .eval.runner import run_eval

    if not args.config:
        raise ConfigError("eval needs --config (models + benchmarks), or use `llm2clip eval cra ...`")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(EvalConfig, args.config, args.overrides)
    cfg.skip_missing = cfg.skip_missing or args.skip_missing
    cfg.cache = cfg.cache and not args.no_cache
    results = run_eval(cfg)
    print(Path(results["files"]["markdown"]).read_text(encoding="utf-8"))
    return 0


def _eval_cra(args) -> int:
    from .eval.cra import cra_for_encoder
    from .text import CaptionEncoder

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.out:
        require_writable_file(args.out, "--out", inputs=(args.data,))  # before the model loads
    options = {k: v for k, v in dict(pooling=args.pooling, instruction=args.instruction,
                                     max_length=args.max_length).items() if v is not None}
    if args.causal:
        options["bidirectional"] = False
    encoder = CaptionEncoder.from_pretrained(args.model, **options)
    result = cra_for_encoder(encoder, args.data, fields=args.fields, limit=args.limit, batch_size=args.batch_size,
                             show_progress=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


def _concat_encoder(args) -> int:
    from .text.concat_encoder import make_concat_encoder

    require_writable_folder(args.out, "--out")
    encoder = make_concat_encoder(args.llm, args.clip_text, args.out)
    print(f"{args.out}: [LLM {encoder.llm.dim} ‖ CLIP text {encoder.clip_text.embed_dim}] = {encoder.dim} dimensions")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    require_writable_folder(args.out, "--out")
    run_demo(args.out, fast=args.fast)
    return 0


def _ablate(args) -> int:
    from .demo.ablate import check_demo_folder, render_table, run_table, table_of

    table_of(args.table)  # an unknown table or a wrong folder fails before anything runs
    check_demo_folder(Path(args.demo), args.fast)
    out = args.out or os.path.join(args.demo, "ablations")
    require_writable_folder(out, "--out")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = run_table(args.table, Path(args.demo), Path(out), fast=args.fast, rows=args.rows,
                        stage1_steps=args.stage1_steps)
    print(render_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
