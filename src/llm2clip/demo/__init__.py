"""`llm2clip demo`: the whole method on embedded real models and data, on a laptop CPU.

    run.py              the steps (data, baseline, stage 1, embed, stage 2, eval, search)
    sizes.py            the full and the --fast size, with the token budget
    dataset.py          the data step: splits (train, val, test) and their files
    evaluation.py       the eval step, through the eval runner and report writer
    summary.py          the printed tables
    emoji_pool.py       what scenes are drawn from: emoji and their names in 14 languages
    scenes.py           scenes, caption records
    near_duplicates.py  the near-duplicate long-caption benchmark's families
    captions.py         the caption grammar (short, spatial, dense, long, walk, one per language)
    rendering.py        drawing scenes with the emoji font; writing a dataset folder
    validation.py       the settings chosen on the validation split (`python -m llm2clip.demo.validation`)
    search_step.py      the search step: the test images searched with long queries, side by side
    ablate.py           the paper's ablation tables in miniature on a demo folder (`llm2clip ablate`)
"""
from .dataset import step_data
from .evaluation import MODELS, STAGE2_FIELDS, evaluate_demo
from .run import run_demo, step_baseline, step_embed, step_stage1, step_stage2
from .sizes import FAST, FULL, DemoSize
from .summary import render_summary

step_eval = evaluate_demo  # the 0.1 name of the eval step (it lived in demo.py)

__all__ = ["run_demo", "render_summary", "DemoSize", "FAST", "FULL", "MODELS", "STAGE2_FIELDS", "evaluate_demo",
           "step_data", "step_baseline", "step_stage1", "step_embed", "step_stage2", "step_eval"]
