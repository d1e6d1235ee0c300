"""GradCache (train.micro_batch): the loss and gradients of a contrastive batch embedded in
pieces equal those of the un-split batch (stage 1 with and without MNTP, stage 2 in its three
modes, CLIP and SigLIP, 2 processes), dropout replays, and it composes with the loop
(grad_accum, gradient checkpointing, resume)."""
from pathlib import Path

import pytest
import torch
from helpers import cli_under_torchrun, last_checkpoint_weights, logged_losses
from test_stage1 import tiny_config, write_records
from test_stage2 import config as stage2_config
from test_stage2 import fresh_stage1_folder  # noqa: F401 (a fixture)

from llm2clip.config import ConfigError, load_config
from llm2clip.data.pair_schedule import PairExample
from llm2clip.text import CaptionEncoder
from llm2clip.train import grad_cache, loop as loop_mod
from llm2clip.train.grad_cache import grad_cache_step
from llm2clip.train.stage1 import train_stage1
from llm2clip.train.stage1_config import Stage1Config
from llm2clip.train.stage1_objective import Stage1Objective
from llm2clip.train.stage2 import build_model, load_text_side, train_stage2
from llm2clip.train.stage2_objective import Stage2Objective

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = [f"a {c} {a} on the {p}" for c in ("red", "blue", "green") for a in ("cat", "dog") for p in ("left", "right")]


@pytest.fixture(scope="module")
def stage1_folder(fresh_stage1_folder):
    """A stage-1 encoder without dropout: a whole batch and its pieces draw different dropout
    masks, so only a dropout-free LoRA can equal the un-split batch; that both passes of one
    piece draw the same masks is test_dropout_is_replayed_in_the_second_pass."""
    return fresh_stage1_folder


def plain_step(objective, inputs):
    out = objective(**inputs)
    out["loss"].backward()
    return {k: v.detach() for k, v in out.items()}


def outputs_and_grads(objective, step, seed: int = 0):
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = step()
    grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.requires_grad and p.grad is not None}
    return out, grads


def assert_equal_to_unsplit(objective, inputs, pieces: int):
    plain_out, plain = outputs_and_grads(objective, lambda: plain_step(objective, inputs))
    cached_out, cached = outputs_and_grads(objective, lambda: grad_cache_step(objective, inputs, pieces))
    assert plain and plain.keys() == cached.keys()
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-5, rtol=0, msg=name)
    assert plain_out.keys() == cached_out.keys()
    for key in plain_out:
        torch.testing.assert_close(cached_out[key], plain_out[key], atol=1e-5, rtol=0, msg=key)


def assert_same_training(run: Path, reference: Path) -> None:
    """The same logged losses and final trained weights, within 1e-5. Not an attention key's
    bias: its true gradient is 0 (softmax ignores a shift shared by a row), and AdamW turns
    the float noise left there into lr-sized steps of either sign."""
    assert logged_losses(run) == pytest.approx(logged_losses(reference), abs=1e-5)
    expected, found = last_checkpoint_weights(reference), last_checkpoint_weights(run)
    assert expected.keys() == found.keys()
    for name in (n for n in expected if not n.endswith("k_proj.bias")):
        torch.testing.assert_close(found[name], expected[name], atol=1e-5, rtol=0, msg=name)


def stage1_objective(tiny_llama, mntp: float = 0.0, dropout: float = 0.0):
    torch.manual_seed(0)
    encoder = CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": dropout},
                                             lm_head=mntp > 0)
    objective = Stage1Objective(encoder, 0.05, mntp_weight=mntp, with_negatives=True).train()
    examples = [PairExample(CAPTIONS[i], CAPTIONS[(i + 1) % 12], CAPTIONS[(i + 5) % 12] if i % 3 else None)
                for i in range(8)]
    return objective, objective.make_batch(examples, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mntp", [0.0, 0.5], ids=["simcse", "simcse+mntp"])
def test_stage1_pieces_equal_the_unsplit_batch(tiny_llama, mntp):
    objective, batch = stage1_objective(tiny_llama, mntp)
    for pieces in (2, 5, 21):  # of 21 rows (8 anchors, 8 positives, 5 negatives): uneven, and one row each
        assert_equal_to_unsplit(objective, batch, pieces)


def test_dropout_is_replayed_in_the_second_pass(tiny_llama, monkeypatch):
    """With LoRA dropout on, GradCache equals back-propagating the first pass's own graphs
    (same masks), and stops doing so when the RNG state is not restored."""
    objective, batch = stage1_objective(tiny_llama, dropout=0.3)

    def first_pass_with_graphs():
        chunks = objective.split(batch, 4)
        whole = [torch.cat(parts) for parts in zip(*(objective.embed(c) for c in chunks))]
        out = objective.contrast(whole, batch)
        out["loss"].backward()
        return out

    _, reference = outputs_and_grads(objective, first_pass_with_graphs)
    _, cached = outputs_and_grads(objective, lambda: grad_cache_step(objective, batch, 4))
    _, unsplit = outputs_and_grads(objective, lambda: plain_step(objective, batch))
    for name in reference:
        torch.testing.assert_close(cached[name], reference[name], atol=1e-5, rtol=0, msg=name)
    assert any(not torch.allclose(unsplit[n], reference[n], atol=1e-4) for n in reference)  # dropout is on

    monkeypatch.setattr(grad_cache, "set_rng_state", lambda state: None)
    _, unreplayed = outputs_and_grads(objective, lambda: grad_cache_step(objective, batch, 4))
    assert any(not torch.allclose(unreplayed[n], reference[n], atol=1e-4) for n in reference)


@pytest.mark.parametrize("mode", ["offline", "online_frozen", "online_lora"])
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_stage2_pieces_equal_the_unsplit_batch(tmp_path, tiny_visions, stage1_folder, mode, loss):
    from types import SimpleNamespace

    cfg = stage2_config(tmp_path, tiny_visions, stage1_folder, mode=mode, loss=loss)
    torch.manual_seed(0)
    encoder, _ = load_text_side(cfg) if mode != "offline" else (None, None)
    model = build_model(cfg, encoder, SimpleNamespace(dim=32) if mode == "offline" else None)
    objective = Stage2Objective(model, loss, encoder, train_encoder=mode == "online_lora").train()
    inputs = {"pixels": torch.randn(9, 3, 32, 32)}
    if mode == "offline":
        inputs["text_embeddings"] = torch.randn(9, 32)
    else:
        encoder.train(mode == "online_lora")
        inputs["text_batch"] = dict(encoder.tokenize(CAPTIONS[:9]))
    for pieces in (3, 4):
        assert_equal_to_unsplit(objective, inputs, pieces)


def test_stage2_with_a_frozen_tower_embeds_the_images_once(tmp_path, tiny_visions, stage1_folder):
    """Wholly frozen tower, frozen caption encoder: pass 1 computes their features once and
    pass 2 runs only the trained heads; the result is the same."""
    cfg = stage2_config(tmp_path, tiny_visions, stage1_folder, mode="online_frozen")
    torch.manual_seed(0)
    encoder, _ = load_text_side(cfg)
    model = build_model(cfg, encoder, None)
    model.vision.requires_grad_(False)
    model.vision.eval()
    objective = Stage2Objective(model, "clip", encoder)
    inputs = {"pixels": torch.randn(8, 3, 32, 32), "text_batch": dict(encoder.tokenize(CAPTIONS[:8]))}
    calls = []
    model.vision.register_forward_hook(lambda *args: calls.append(1))
    assert_equal_to_unsplit(objective, inputs, 4)
    assert len(calls) == 1 + 4  # the un-split forward, then once per piece


def test_training_with_micro_batches_equals_training_without(tmp_path, tiny_llama):
    """Stage 1 through the loop: MNTP, grad_accum 2 and gradient checkpointing, 3 steps."""
    runs = {}
    for micro in (None, 2):
        cfg = tiny_config(tmp_path / str(micro), tiny_llama, max_steps=3, batch_size=4, grad_accum=2, mntp_weight=0.5,
                          lr=1e-2, save_every=3)
        cfg.eval.cra = None
        cfg.model.gradient_checkpointing = True
        cfg.train.micro_batch = micro
        runs[micro] = Path(train_stage1(cfg)["output_dir"])
    assert_same_training(runs[2], runs[None])


def test_stage2_training_with_micro_batches_equals_training_without(tmp_path, tiny_visions, stage1_folder):
    runs = {}
    for micro in (None, 3):
        cfg = stage2_config(tmp_path / str(micro), tiny_visions, stage1_folder, mode="online_lora", max_steps=3,
                            batch_size=9, lr_llm=1e-2)
        cfg.train.micro_batch = micro
        runs[micro] = Path(train_stage2(cfg)["output_dir"])
    assert_same_training(runs[3], runs[None])


class Killed(Exception):
    pass


def test_resume_with_micro_batches_equals_an_uninterrupted_run(tmp_path, tiny_llama, monkeypatch):
    straight, crashed = (tiny_config(tmp_path / name, tiny_llama, max_steps=4, save_every=2, batch_size=4,
                                     micro_batch=2) for name in ("a", "b"))
    for cfg in (straight, crashed):
        cfg.model.lora.dropout, cfg.eval.cra = 0.1, None
    train_stage1(straight)
    real_check = loop_mod.check_finite

    def crash_at_step_3(value, step, out):
        if step == 2:
            raise Killed()
        real_check(value, step, out)

    monkeypatch.setattr(loop_mod, "check_finite", crash_at_step_3)
    with pytest.raises(Killed):
        train_stage1(crashed)
    monkeypatch.setattr(loop_mod, "check_finite", real_check)
    train_stage1(crashed, resume=True)
    a, b = last_checkpoint_weights(Path(straight.train.output_dir)), last_checkpoint_weights(Path(crashed.train.output_dir))
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-7, rtol=0)
    assert logged_losses(Path(crashed.train.output_dir)) == pytest.approx(logged_losses(Path(straight.train.output_dir)),
                                                                          abs=1e-6)


@pytest.mark.parametrize("setting, message", [
    ("train.micro_batch=3", "train.micro_batch (3) must divide train.batch_size (8)"),
    ("train.micro_batch=0", "train.micro_batch must be >= 1"),
    ("train.micro_batch=16", "train.micro_batch (16) must divide train.batch_size (8)"),
])
def test_micro_batch_is_checked(tmp_path, setting, message):
    overrides = [f"data.train={write_records(tmp_path / 'c.jsonl')}", "train.batch_size=8", setting]
    with pytest.raises(ConfigError) as error:
        load_config(Stage1Config, REPO / "configs/stage1/tiny.yaml", overrides).validate()
    assert message in str(error.value)


def test_micro_batch_refuses_fp16(tmp_path):
    overrides = [f"data.train={write_records(tmp_path / 'c.jsonl')}", "train.batch_size=8", "train.micro_batch=4",
                 "train.precision=fp16"]
    with pytest.raises(ConfigError, match="fp16"):
        load_config(Stage1Config, REPO / "configs/stage1/tiny.yaml", overrides).validate()


@pytest.mark.distributed
def test_two_processes_with_micro_batches_equal_one_process_without(tmp_path, tiny_llama):
    def run(nproc: int, batch: int, micro: str, name: str) -> Path:
        cfg_file = tmp_path / f"{name}.yaml"
        data = write_records(tmp_path / "captions.jsonl")
        cfg_file.write_text(
            f"model: {{name: {tiny_llama}, max_length: 64, lora: {{r: 4, alpha: 8, dropout: 0.0}}}}\n"
            f"data: {{train: {data}}}\n"
            f"train: {{output_dir: {tmp_path / name}, batch_size: {batch}, micro_batch: {micro}, max_steps: 3,"
            f" lr: 1.0e-3, warmup_steps: 1, save_every: 3, precision: fp32, device: cpu}}\n")
        cli_under_torchrun(nproc, "stage1", "--config", str(cfg_file))
        return tmp_path / name

    assert_same_training(run(2, 4, "2", "two"), run(1, 8, "null", "one"))
