"""Checkpoint pruning (train.keep_checkpoints) and the final step, through stage-1 runs."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import last_checkpoint_weights, logged_losses
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


def test_a_longer_resumed_run_follows_the_new_schedule_from_its_first_step(tmp_path, tiny_llama):
    """Resume with a larger max_steps: from the checkpoint on, the run equals one configured
    that long from the start (the restored optimiser's lr belongs to the old schedule)."""
    # one warmup step: steps 1 and 2 use 0 and the peak lr whatever max_steps is, so a 4-step
    # and an 8-step run hold the same weights at step 2 and part only after it
    short = tiny_config(tmp_path / "short", tiny_llama, max_steps=4, save_every=2, keep_checkpoints=0)
    long = tiny_config(tmp_path / "long", tiny_llama, max_steps=8, save_every=2, keep_checkpoints=0)
    for cfg in (short, long):
        cfg.eval.cra = None
        train_stage1(cfg)
    run = Path(short.train.output_dir)
    shutil.rmtree(list_checkpoints(run / "checkpoints")[-1])  # back to the step-2 checkpoint
    short.train.max_steps = 8
    train_stage1(short, resume=True)

    a, b = last_checkpoint_weights(Path(long.train.output_dir)), last_checkpoint_weights(run)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-7, rtol=0)
    assert logged_losses(run) == pytest.approx(logged_losses(Path(long.train.output_dir)), abs=1e-6)
