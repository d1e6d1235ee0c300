"""Checkpoint pruning (train.keep_checkpoints) and the final step, through stage-1 runs."""
import json
from pathlib import Path

import pytest
from test_stage1 import tiny_config

from llm2clip.train.checkpoint import list_checkpoints
from llm2clip.train.stage1 import train_stage1


def kept_steps(run: Path) -> list[int]:
    return [json.loads((p / "state.json").read_text())["step"] for p in list_checkpoints(run / "checkpoints")]


@pytest.mark.parametrize("keep, expected", [(2, [4, 5]), (1, [5]), (0, [2, 4, 5])])
def test_keep_checkpoints_prunes_the_oldest_and_the_final_step_is_always_saved(tmp_path, tiny_llama, keep, expected):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=5, save_every=2, keep_checkpoints=keep)
    cfg.eval.cra = None
    train_stage1(cfg)
    assert kept_steps(Path(cfg.train.output_dir)) == expected


def test_a_resumed_run_prunes_across_both_runs_and_ends_on_its_final_step(tmp_path, tiny_llama):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=3, save_every=1, keep_checkpoints=2)
    cfg.eval.cra = None
    train_stage1(cfg)
    assert kept_steps(Path(cfg.train.output_dir)) == [2, 3]
    cfg.train.max_steps = 5  # a longer run of the same config
    train_stage1(cfg, resume=True)
    assert kept_steps(Path(cfg.train.output_dir)) == [4, 5]
