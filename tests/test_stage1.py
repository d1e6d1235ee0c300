"""Stage-1 training on tiny models: learning, resume = uninterrupted, 2 processes = 1."""
import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import cli_under_accelerate, cli_under_torchrun, last_checkpoint_weights, logged_losses
from safetensors.torch import load_file

from llm2clip.cli import main as cli_main
from llm2clip.config import ConfigError, load_config
from llm2clip.text import CaptionEncoder
from llm2clip.testing.random_llm import save_random_llm
from llm2clip.train import loop as loop_mod
from llm2clip.train import stage1 as stage1_mod
from llm2clip.train.checkpoint import list_checkpoints
from llm2clip.train.runtime import TrainingError
from llm2clip.train.stage1 import train_stage1
from llm2clip.train.stage1_config import Stage1Config

REPO = Path(__file__).resolve().parents[1]
COLORS = ["red", "blue", "green", "yellow", "black", "white"]
ANIMALS = ["cat", "dog", "bird", "fish"]


# A second vocabulary for the same content: pairs across the two share no word, so a
# random model retrieves near chance and only training can link them.
CODES = dict(zip(COLORS, ["one", "two", "three", "four", "five", "six"]))
PLACES = dict(zip(ANIMALS, ["left", "right", "top", "bottom"]))


def write_records(path: Path) -> Path:
    """24 'images', each with three captions of the same content in two vocabularies."""
    with open(path, "w", encoding="utf-8") as handle:
        for i, (color, animal) in enumerate(itertools.product(COLORS, ANIMALS)):
            row = {"id": f"img{i}", "raw_caption": f"a {color} {animal}",
                   "shortSV": f"{CODES[color]} {PLACES[animal]}", "longSV": f"the {animal} is {color}"}
            handle.write(json.dumps(row) + "\n")
    return path


def tiny_config(tmp_path: Path, model: str, **train) -> Stage1Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_records(tmp_path / "captions.jsonl")
    overrides = [f"model.name={model}", f"data.train={data}", f"train.output_dir={tmp_path / 'run'}",
                 f"eval.cra={data}"] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config(Stage1Config, REPO / "configs/stage1/tiny.yaml", overrides)


@pytest.mark.slow
def test_training_raises_caption_retrieval_accuracy(tmp_path, tiny_llama):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=40, lr=1e-2, batch_size=8, warmup_steps=2, temperature=0.1)
    summary = train_stage1(cfg)
    before, after = summary["cra"]["before"], summary["cra"]["after"]
    assert before["top1"] < 15 and after["top1"] > before["top1"] + 30, summary["cra"]
    run = Path(cfg.train.output_dir)
    assert (run / "final" / "adapter_model.safetensors").is_file()
    assert json.loads((run / "cra.json").read_text())["after"]["top1"] == after["top1"]
    curve = logged_losses(run)
    assert len(curve) == 40 and sum(curve[-5:]) < sum(curve[:5])


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, tiny_llama, monkeypatch):
    # dropout on: the resumed run must also replay the random numbers
    straight = tiny_config(tmp_path / "a", tiny_llama, max_steps=6, save_every=2)
    crashed = tiny_config(tmp_path / "b", tiny_llama, max_steps=6, save_every=2)
    for cfg in (straight, crashed):
        cfg.model.lora.dropout = 0.1
    train_stage1(straight)

    real_check = loop_mod.check_finite

    def crash_at_step_5(value, step, out):
        if step == 4:  # 0-based: after checkpoint 4 was written and step 5's forward ran
            raise Killed()
        real_check(value, step, out)

    monkeypatch.setattr(loop_mod, "check_finite", crash_at_step_5)
    with pytest.raises(Killed):
        train_stage1(crashed)
    monkeypatch.setattr(loop_mod, "check_finite", real_check)
    with pytest.raises(TrainingError, match="--resume"):
        train_stage1(crashed)  # refuses to overwrite a run with checkpoints
    train_stage1(crashed, resume=True)

    a, b = last_checkpoint_weights(Path(straight.train.output_dir)), last_checkpoint_weights(Path(crashed.train.output_dir))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-7, rtol=0)
    assert logged_losses(Path(crashed.train.output_dir)) == pytest.approx(logged_losses(Path(straight.train.output_dir)), abs=1e-6)


@pytest.mark.distributed
@pytest.mark.parametrize("launch", [cli_under_torchrun, cli_under_accelerate], ids=["torchrun", "accelerate"])
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, tiny_llama, launch):
    def run(nproc: int, batch: int, name: str) -> Path:
        cfg_file = tmp_path / f"{name}.yaml"
        data = write_records(tmp_path / "captions.jsonl")
        cfg_file.write_text(
            f"model: {{name: {tiny_llama}, max_length: 64, lora: {{r: 4, alpha: 8, dropout: 0.0}}}}\n"
            f"data: {{train: {data}}}\n"
            f"train: {{output_dir: {tmp_path / name}, batch_size: {batch}, max_steps: 4, lr: 1.0e-3,"
            f" warmup_steps: 1, save_every: 4, precision: fp32, device: cpu}}\n")
        launch(nproc, "stage1", "--config", str(cfg_file))
        return tmp_path / name

    one, two = run(1, 8, "one"), run(2, 4, "two")
    a, b = last_checkpoint_weights(one), last_checkpoint_weights(two)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=2e-6, rtol=1e-4)
    assert logged_losses(two) == pytest.approx(logged_losses(one), abs=1e-5)


def test_mntp_and_text_pairs_with_negatives_train(tmp_path, tiny_llama):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"what color is the {a}", "positive": f"the {a} is red",
                                         "negative": f"the {a} is blue"}) + "\n" for a in ANIMALS * 3))
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=4, mntp_weight=0.5)
    cfg.data.text_pairs, cfg.data.text_pair_ratio = str(pairs), 0.25
    train_stage1(cfg)
    rows = [json.loads(line) for line in (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert all(r["mntp"] > 0 and r["loss"] == pytest.approx(r["simcse"] + 0.5 * r["mntp"], rel=1e-5) for r in steps)


def test_mntp_with_lora_trains_and_saves_only_the_lora_weights(tmp_path, monkeypatch):
    """MNTP reads predictions through the LM head; with LoRA on, the head must stay frozen
    and out of every checkpoint and the final folder (0.5 B parameters for Llama-3-8B,
    whose head is not tied to its embeddings - nor is this model's)."""
    llm = save_random_llm(tmp_path / "untied-llm", "llama", tie_word_embeddings=False)
    cfg = tiny_config(tmp_path, str(llm), max_steps=3, save_every=1, mntp_weight=0.5, lr=1e-2)
    loaded = []
    real_load = stage1_mod.load_encoder
    monkeypatch.setattr(stage1_mod, "load_encoder", lambda c: loaded.append(real_load(c)) or loaded[-1])
    train_stage1(cfg)
    encoder = loaded[0]
    assert encoder.lm_head is not None and not encoder.base_config.tie_word_embeddings
    initial = CaptionEncoder.from_pretrained(str(llm), lm_head=True, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    before = dict(initial.named_parameters())
    changed = {name for name, p in encoder.named_parameters()
               if name in before and not torch.equal(p.detach(), before[name].detach())}
    assert changed and all("lora_" in name for name in changed), sorted(changed)[:5]
    torch.testing.assert_close(encoder.lm_head.weight, initial.lm_head.weight, atol=0, rtol=0)

    run = Path(cfg.train.output_dir)
    for checkpoint in list_checkpoints(run / "checkpoints"):
        saved = load_file(str(checkpoint / "weights.safetensors"))
        assert saved and all("lora_" in name for name in saved), sorted(saved)[:5]
    final_tensors = [name for file in (run / "final").glob("*.safetensors") for name in load_file(str(file))]
    assert final_tensors and all("lora_" in name for name in final_tensors), final_tensors[:5]


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, tiny_llama, monkeypatch):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=6, save_every=2)
    real = stage1_mod.Stage1Objective.forward

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        if self.calls == 3:
            out["loss"] = out["loss"] * float("nan")
        self.calls += 1
        return out

    monkeypatch.setattr(stage1_mod.Stage1Objective, "calls", 0, raising=False)
    monkeypatch.setattr(stage1_mod.Stage1Objective, "forward", poisoned)
    with pytest.raises(TrainingError, match="checkpoint-00000002"):
        train_stage1(cfg)
    assert [p.name for p in list_checkpoints(Path(cfg.train.output_dir) / "checkpoints")] == ["checkpoint-00000002"]


def test_cli_reports_bad_config_and_data_clearly(tmp_path, capsys, tiny_llama):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {batch_sise: 4}\n")
    assert cli_main(["stage1", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "batch_sise" in err and "batch_size" in err and "Traceback" not in err

    good = tmp_path / "good.yaml"
    good.write_text(f"model: {{name: {tiny_llama}}}\ndata: {{train: {tmp_path / 'missing.jsonl'}}}\n"
                    f"train: {{output_dir: {tmp_path / 'run'}, device: cpu}}\n")
    assert cli_main(["stage1", "--config", str(good)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err

    assert cli_main(["stage1", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"config.model: unknown key\(s\) 'nmae'; valid keys: .*name"):
        load_config(Stage1Config, None, ["model.nmae=x"])


def test_paper_config_holds_the_paper_defaults():
    cfg = load_config(Stage1Config, REPO / "configs/stage1/paper.yaml")
    assert (cfg.model.pooling, cfg.model.bidirectional, cfg.model.max_length) == ("mean", True, 512)
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.dropout) == (16, 32, 0.05)
    assert cfg.model.instruction == "Given a caption, retrieve a similar relevant caption."
    assert (cfg.train.lr, cfg.train.warmup_steps, cfg.train.temperature, cfg.train.epochs) == (2e-4, 300, 0.02, 1)
    assert cfg.train.mntp_weight == 0 and cfg.model.gradient_checkpointing
