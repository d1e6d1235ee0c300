"""`train.fsdp: true` through the CLI: stage 1 sharded over 2 gloo processes trains as 1
process without FSDP and as 2-process DDP (losses, checkpoints, final/, CRA); a resumed
FSDP run equals an uninterrupted one; an FSDP checkpoint resumes without FSDP; and the
settings FSDP cannot serve are refused, naming the key.

The building blocks themselves (sharding, gathering, MNTP, bf16) are tested in test_fsdp.py.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import cli_under_torchrun, last_checkpoint_weights, logged_losses, save_lora_with_random_b
from safetensors.torch import load_file
from test_stage1 import write_records

from llm2clip.cli import main as cli_main
from llm2clip.train.checkpoint import list_checkpoints

STEPS, CLIP = 4, 0.05


def stage1_config(folder: Path, model: str, name: str, *, batch: int, fsdp: bool, steps: int = STEPS,
                  **extra) -> Path:
    """A stage-1 recipe of global batch 8 pairs per micro-step, 2 micro-steps per step, dropout
    0, a constant lr after 1 warmup step (so a run cut short and resumed with more steps sees
    the same lrs as a run of all of them) and clipping at CLIP (active: the norms are larger)."""
    data = write_records(folder / "captions.jsonl")
    train = {"output_dir": str(folder / name), "batch_size": batch, "grad_accum": 2, "max_steps": steps,
             "lr": 1.0e-2, "warmup_steps": 1, "schedule": "constant", "grad_clip": CLIP, "save_every": 2,
             "keep_checkpoints": 0, "precision": "fp32", "device": "cpu", "fsdp": fsdp, **extra}
    recipe = {"model": {"name": model, "max_length": 64, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
              "data": {"train": str(data)}, "train": train, "eval": {"cra": str(data)}}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """single: 1 process, no FSDP; ddp and fsdp: 2 processes; half: fsdp cut at step 2 (its
    folder copied twice, then resumed to STEPS with FSDP and without)."""
    root = tmp_path_factory.mktemp("fsdp-training")
    assert cli_main(["stage1", "--config", str(stage1_config(root, tiny_llama, "single", batch=8, fsdp=False))]) == 0
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        done = cli_under_torchrun(2, "stage1", "--config", str(stage1_config(root, tiny_llama, name, batch=4,
                                                                            fsdp=fsdp)))
        assert ("2 decoder layers and the rest of the stage1 model sharded over 2 processes" in done.stderr) == fsdp
    cli_under_torchrun(2, "stage1", "--config", str(stage1_config(root, tiny_llama, "half", batch=4, fsdp=True,
                                                                  steps=2)))
    for name, fsdp in (("resumed-fsdp", True), ("resumed-ddp", False)):
        moved(root / "half", root / name)
        config = stage1_config(root, tiny_llama, name, batch=4, fsdp=fsdp)
        cli_under_torchrun(2, "stage1", "--config", str(config), "--resume")
    return root


def moved(run: Path, to: Path) -> None:
    """A copy of the run folder `run` at `to`, its recorded output_dir changed to match (a
    resume refuses any other difference)."""
    shutil.copytree(run, to)
    recorded = yaml.safe_load((to / "config.yaml").read_text())
    recorded["train"]["output_dir"] = str(to)
    (to / "config.yaml").write_text(yaml.safe_dump(recorded, sort_keys=False))


def assert_same_run(a: Path, b: Path, atol: float = 1e-5) -> None:
    """Logged losses, the last checkpoint's weights and final/'s adapter within atol."""
    assert logged_losses(b) == pytest.approx(logged_losses(a), abs=atol)
    for weights_a, weights_b in ((last_checkpoint_weights(a), last_checkpoint_weights(b)),
                                 (load_file(str(a / "final" / "adapter_model.safetensors")),
                                  load_file(str(b / "final" / "adapter_model.safetensors")))):
        assert set(weights_b) == set(weights_a)
        for name in weights_a:
            torch.testing.assert_close(weights_b[name], weights_a[name], rtol=0, atol=atol,
                                       msg=lambda m: f"{name}: {m}")


@pytest.mark.distributed
def test_stage1_with_fsdp_on_two_processes_equals_one_process_and_ddp(runs):
    single, ddp, fsdp = runs / "single", runs / "ddp", runs / "fsdp"
    rows = [json.loads(line) for line in (fsdp / "metrics.jsonl").read_text().splitlines()]
    norms = [r["grad_norm"] for r in rows if "grad_norm" in r]
    assert len(norms) == STEPS and min(norms) > CLIP  # clipping acted on every step
    single_norms = [json.loads(line).get("grad_norm") for line in (single / "metrics.jsonl").read_text().splitlines()]
    assert norms == pytest.approx([n for n in single_norms if n is not None], abs=1e-5)
    final = load_file(str(single / "final" / "adapter_model.safetensors"))
    assert all(w.abs().max() > 1e-3 for name, w in final.items() if "lora_B" in name)  # training moved them
    assert_same_run(single, fsdp)
    assert_same_run(ddp, fsdp)
    # CRA before and after ran on the gathered encoder
    assert json.loads((fsdp / "cra.json").read_text()) == json.loads((single / "cra.json").read_text())


@pytest.mark.distributed
def test_fsdp_checkpoints_are_the_files_a_run_without_fsdp_writes(runs):
    """Full tensors under today's names, written once by rank 0 (the ranks' RNG states apart)."""
    for fsdp_checkpoint, ddp_checkpoint in zip(list_checkpoints(runs / "fsdp" / "checkpoints"),
                                               list_checkpoints(runs / "ddp" / "checkpoints"), strict=True):
        assert sorted(p.name for p in fsdp_checkpoint.iterdir()) == sorted(p.name for p in ddp_checkpoint.iterdir())
        for file in ("weights.safetensors", "optimizer.safetensors"):
            a, b = load_file(str(ddp_checkpoint / file)), load_file(str(fsdp_checkpoint / file))
            assert {k: v.shape for k, v in b.items()} == {k: v.shape for k, v in a.items()}
            for name in a:
                torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=lambda m: f"{file} {name}: {m}")


@pytest.mark.distributed
def test_resume_under_fsdp_equals_an_uninterrupted_run(runs):
    assert_same_run(runs / "fsdp", runs / "resumed-fsdp", atol=1e-6)


@pytest.mark.distributed
def test_a_checkpoint_written_with_fsdp_resumes_without_it(runs):
    assert_same_run(runs / "fsdp", runs / "resumed-ddp")


# ---------------------------------------------------------------- refused settings
def refused(capsys, command: str, config: Path, *words: str) -> None:
    assert cli_main([command, "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "train.fsdp" in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("extra, words", [({}, ["launch 2 or more", "torchrun"]),
                                          ({"precision": "fp16"}, ["fp16"]),
                                          ({"micro_batch": 2}, ["train.micro_batch"])],
                         ids=["one-process", "fp16", "grad-cache"])
def test_stage1_refuses_what_fsdp_cannot_do(tmp_path, tiny_llama, capsys, extra, words):
    refused(capsys, "stage1", stage1_config(tmp_path, tiny_llama, "run", batch=4, fsdp=True, **extra), *words)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_offline_stage2_refuses_fsdp(tmp_path, capsys):
    config = tmp_path / "stage2.yaml"
    config.write_text(json.dumps({"model": {"caption_encoder": str(tmp_path / "encoder")},
                                  "data": {"train": str(tmp_path / "data.jsonl"), "embeddings": str(tmp_path / "store")},
                                  "train": {"mode": "offline", "fsdp": True, "output_dir": str(tmp_path / "run")}}))
    refused(capsys, "stage2", config, "offline")


# ---------------------------------------------------------------- online stage 2
@pytest.fixture(scope="module")
def lora_folder(tiny_llama, tmp_path_factory):
    """A stage-1 LoRA with non-zero B (it changes the embeddings) and dropout 0 (ranks draw
    their own dropout masks, so only without it can 2 processes equal 1)."""
    return save_lora_with_random_b(tiny_llama, tmp_path_factory.mktemp("lora-stage1") / "final", dropout=0.0, seed=3)


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["online_lora", "online_frozen"])
def test_online_stage2_with_fsdp_on_two_processes_equals_one_process(tmp_path, tiny_visions, lora_folder, mode):
    from test_stage2 import write_dataset

    data, _ = write_dataset(tmp_path / "data")

    def recipe(name: str, batch: int, fsdp: bool) -> Path:
        train = {"mode": mode, "output_dir": str(tmp_path / name), "batch_size": batch, "grad_accum": 2,
                 "max_steps": 3, "lr_vision": 1.0e-3, "lr_adaptor": 3.0e-3, "lr_llm": 1.0e-2, "warmup_steps": 1,
                 "grad_clip": CLIP, "save_every": 3, "precision": "fp32", "device": "cpu", "fsdp": fsdp}
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps({
            "model": {"vision": tiny_visions["clip"], "caption_encoder": lora_folder, "embed_dim": 32,
                      "adaptor": {"kind": "mlp", "num_blocks": 2}},
            "data": {"train": str(data), "real_fields": ["raw_caption"], "dense_fields": ["longSV"], "num_workers": 0},
            "train": train}))
        return path

    assert cli_main(["stage2", "--config", str(recipe("one", 8, False))]) == 0
    done = cli_under_torchrun(2, "stage2", "--config", str(recipe("fsdp", 4, True)))
    assert "2 decoder layers and the rest of the stage2 model sharded over 2 processes" in done.stderr
    one, fsdp = tmp_path / "one", tmp_path / "fsdp"
    assert logged_losses(fsdp) == pytest.approx(logged_losses(one), abs=1e-5)
    logged = (fsdp / "metrics.jsonl").read_text().splitlines()
    assert min(json.loads(line)["grad_norm"] for line in logged) > CLIP
    assert json.loads(logged[-1])["logit_scale"] != json.loads(logged[0])["logit_scale"]  # it trained (the hook)
    files = ["model.safetensors", "caption_encoder/adapter_model.safetensors"]  # the tuned LoRA or a copy
    for a, b in ((last_checkpoint_weights(one), last_checkpoint_weights(fsdp)),
                 *((load_file(str(one / "final" / f)), load_file(str(fsdp / "final" / f))) for f in files)):
        assert set(b) == set(a)
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=lambda m: f"{name}: {m}")
