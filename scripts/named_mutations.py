"""The bugs issue 20 names, each applied to a scratch copy of the sources and run against
the tests that must catch it (docs/testing.md, "Named mutations").

    python scripts/named_mutations.py [NAME ...]      (default: all)

For each mutation: copy src/, tests/ and configs/ to runs/named-mutations/<name>/, replace
one snippet of source, run the named tests there with PYTHONPATH at the mutated src/ (so
torchrun's processes run it too), and report whether they failed. A mutation marked
`equivalent` changes no number (documented why) and is expected to pass.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE2 = "src/llm2clip/train/stage2.py"
LOOP = "src/llm2clip/train/loop.py"
GRAD_CACHE = "src/llm2clip/train/grad_cache.py"
SCALE = "tests/test_gradient_scale.py::"


@dataclass
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: list[str]
    equivalent: bool = False


MUTATIONS = [
    # One training loop serves both stages (train/loop.py): a mutation of its step is seen by
    # the tests of both stages.
    Mutation("doubled_loss", LOOP, 'accelerator.backward(outputs["loss"] / t.grad_accum)',
             'accelerator.backward(2 * outputs["loss"] / t.grad_accum)',
             [SCALE + "test_stage2_offline_first_step_gradient_is_the_batch_losss_gradient",
              SCALE + "test_stage1_grad_accum_2_is_the_mean_of_the_micro_batch_losses"]),
    Mutation("doubled_loss_micro_batched", GRAD_CACHE, '(outputs["loss"] / divisor).backward()',
             '(2 * outputs["loss"] / divisor).backward()',
             ["tests/test_grad_cache.py::test_training_with_micro_batches_equals_training_without"]),
    Mutation("loss_not_divided_by_grad_accum", LOOP, 'accelerator.backward(outputs["loss"] / t.grad_accum)',
             'accelerator.backward(outputs["loss"])',
             [SCALE + "test_stage2_online_frozen_grad_accum_2_is_the_mean_of_the_micro_batch_losses"]),
    Mutation("loss_scaled_by_world_size", LOOP, 'accelerator.backward(outputs["loss"] / t.grad_accum)',
             'accelerator.backward(outputs["loss"] * accelerator.num_processes / t.grad_accum)',
             [SCALE + "test_stage2_two_processes_with_grad_accum_2_give_the_single_process_gradient[offline]"]),
    Mutation("dropped_adapter", STAGE2,
             'encoder = load_caption_encoder(cfg.model.caption_encoder, precision="fp32")\n',
             'encoder = load_caption_encoder(cfg.model.caption_encoder, precision="fp32")\n'
             '    encoder.model.base_model.disable_adapter_layers()\n',
             [SCALE + "test_stage2_online_frozen_grad_accum_2_is_the_mean_of_the_micro_batch_losses",
              "tests/test_stage2.py::test_offline_training_equals_online_frozen_training"]),
    Mutation("train_mode_encoder", STAGE2,
             "objective.caption_encoder.eval()  # frozen: no dropout, same numbers as the store",
             "pass",
             [SCALE + "test_stage2_online_frozen_grad_accum_2_is_the_mean_of_the_micro_batch_losses",
              "tests/test_stage2.py::test_offline_training_equals_online_frozen_training"]),
    # every micro-step under no_sync: each rank steps on its own gradient
    Mutation("lost_sync", LOOP,
             "with self._no_sync(model, skip=micro < t.grad_accum - 1):",
             "with self._no_sync(model, skip=True):",
             [SCALE + "test_stage2_two_processes_with_grad_accum_2_give_the_single_process_gradient[offline]",
              SCALE + "test_stage1_two_processes_with_grad_accum_2_give_the_single_process_gradient"]),
    # no_sync dropped altogether: DDP all-reduces after every micro-step, and the mean of
    # sums equals the sum of means, so the gradient is the same (only slower)
    Mutation("no_sync_removed", LOOP,
             "with self._no_sync(model, skip=micro < t.grad_accum - 1):",
             "with self._no_sync(model, skip=False):",
             [SCALE + "test_stage2_two_processes_with_grad_accum_2_give_the_single_process_gradient[offline]"],
             equivalent=True),
    Mutation("pruned_newest_checkpoint", "src/llm2clip/train/checkpoint.py",
             "for old in list_checkpoints(root)[:-keep] if keep > 0 else []:",
             "for old in list_checkpoints(root)[::-1][:-keep] if keep > 0 else []:",
             ["tests/test_checkpoints.py"]),
]


def scratch_with(mutation: Mutation) -> Path:
    scratch = REPO / "runs" / "named-mutations" / mutation.name
    if scratch.exists():
        shutil.rmtree(scratch)
    for folder in ("src", "tests", "configs"):
        shutil.copytree(REPO / folder, scratch / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", scratch / "pyproject.toml")
    target = scratch / mutation.file
    source = target.read_text(encoding="utf-8")
    if source.count(mutation.old) != 1:
        raise SystemExit(f"{mutation.name}: the snippet to mutate occurs {source.count(mutation.old)} times "
                         f"in {mutation.file}; update scripts/named_mutations.py")
    target.write_text(source.replace(mutation.old, mutation.new), encoding="utf-8")
    return scratch


def main(names: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    wrong = 0
    for mutation in chosen:
        scratch = scratch_with(mutation)
        env = {**os.environ, "PYTHONPATH": str(scratch / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests]
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True)
        failed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("FAILED")]
        caught = done.returncode != 0
        verdict = ("caught by " + ", ".join(failed or ["(error: see log)"])) if caught else "not caught"
        expected = caught != mutation.equivalent
        wrong += not expected
        print(f"{mutation.name}: {verdict}{'' if expected else '  <-- UNEXPECTED'}", flush=True)
        (scratch / "pytest.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
