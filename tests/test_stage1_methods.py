"""Table 9's stage-1 methods beside the default supervised SimCSE: unsupervised SimCSE (one
caption twice, dropout as the augmentation), MNTP alone, and the frozen LLM with an adaptor."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_stage1 import tiny_config, write_records

from llm2clip.config import ConfigError
from llm2clip.data.pair_schedule import PairExample
from llm2clip.data.records import read_caption_records
from llm2clip.embeddings import EmbeddingStore, write_embedding_store
from llm2clip.embeddings.errors import StoreMismatchError
from llm2clip.text import CaptionEncoder
from llm2clip.text.encoder_adaptor import build_encoder_adaptor
from llm2clip.text.identity import expected_identity_of_folder, store_identity
from llm2clip.train import stage1 as stage1_mod
from llm2clip.train.checkpoint import list_checkpoints
from llm2clip.train.mntp import IGNORE
from llm2clip.train.stage1 import train_stage1
from llm2clip.train.stage1_objective import Stage1Objective

EXAMPLES = [PairExample("a red cat", "one left"), PairExample("a blue dog", "two right"),
            PairExample("the bird is green", "three top")]


def encoder_of(llm: str, dropout: float = 0.0, **kwargs) -> CaptionEncoder:
    torch.manual_seed(0)
    return CaptionEncoder.from_pretrained(llm, lora={"r": 4, "alpha": 8, "dropout": dropout}, **kwargs)


def metric_rows(cfg) -> list[dict]:
    lines = (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


# ---------------------------------------------------------------- unsupervised SimCSE
def test_unsupervised_simcse_contrasts_each_caption_with_itself(tiny_llama):
    encoder = encoder_of(tiny_llama)
    objective = Stage1Objective(encoder, temperature=1.0, simcse="unsupervised").train()
    batch = objective.make_batch(EXAMPLES)
    n = len(EXAMPLES)
    assert torch.equal(batch["input_ids"][:n], batch["input_ids"][n:2 * n])  # the positives are the anchors
    out = objective(**batch)
    # by hand: the anchors embedded on their own (no dropout here), InfoNCE with the diagonal as targets
    emb = encoder.encode([e.anchor for e in EXAMPLES])
    logits = emb @ emb.T / 1.0
    expected = (torch.logsumexp(logits, dim=1) - logits.diag()).mean()
    assert out["simcse"].item() == pytest.approx(expected.item(), rel=1e-4)
    supervised = Stage1Objective(encoder, temperature=1.0).train()
    assert supervised(**supervised.make_batch(EXAMPLES))["simcse"].item() != pytest.approx(expected.item(), rel=1e-3)


def test_unsupervised_simcse_augments_by_dropout_only_in_training(tiny_llama):
    encoder = encoder_of(tiny_llama, dropout=0.5)
    # LoRA starts with B = 0, so its dropout changes nothing until B has trained: as after some steps
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    objective = Stage1Objective(encoder, temperature=0.05, simcse="unsupervised")
    batch = objective.make_batch(EXAMPLES)
    n = len(EXAMPLES)
    rows = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "pool_mask")}
    objective.train()
    trained = objective.embed(rows)[0]
    assert not torch.allclose(trained[:n], trained[n:2 * n], atol=1e-4)  # two dropout masks: two views
    objective.eval()
    with torch.no_grad():
        evaluated = objective.embed(rows)[0]
    torch.testing.assert_close(evaluated[:n], evaluated[n:2 * n])


def test_unsupervised_simcse_trains(tmp_path, tiny_llama):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=3, simcse="unsupervised")
    train_stage1(cfg)
    rows = metric_rows(cfg)
    assert len(rows) == 3 and all(r["loss"] == pytest.approx(r["simcse"]) for r in rows)


# ---------------------------------------------------------------- MNTP alone
def test_mntp_only_loss_is_the_mntp_term_alone(tiny_llama):
    encoder = encoder_of(tiny_llama, lm_head=True)
    objective = Stage1Objective(encoder, temperature=0.05, mntp_weight=0.5, mntp_probability=0.5,
                                simcse="none").train()
    batch = objective.make_batch(EXAMPLES, torch.Generator().manual_seed(0))
    out = objective(**batch)
    assert "simcse" not in out
    # by hand: the LM head's prediction of each masked token from the state one position before
    hidden = encoder.hidden_states(batch["mntp_input_ids"], batch["attention_mask"], batch["position_ids"])
    logits = encoder.lm_head(hidden)[:, :-1]
    labels = batch["mntp_labels"][:, 1:]
    chosen = labels != IGNORE
    expected = F.cross_entropy(logits[chosen], labels[chosen])
    assert out["mntp"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * expected.item(), rel=1e-5)


def test_mntp_only_trains_without_a_simcse_term(tmp_path, tiny_llama):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=3, simcse="none", mntp_weight=0.5)
    train_stage1(cfg)
    rows = metric_rows(cfg)
    assert len(rows) == 3 and all("simcse" not in r and r["loss"] == pytest.approx(0.5 * r["mntp"]) for r in rows)


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("train, keys", [
    ({"simcse": "none"}, ["train.simcse", "train.mntp_weight"]),
    ({"simcse": "none", "mntp_weight": 0.5, "micro_batch": 2}, ["train.micro_batch", "train.simcse"]),
    ({"simcse": "sup"}, ["train.simcse"]),
])
def test_bad_stage1_method_setting_is_refused_naming_the_keys(tmp_path, tiny_llama, train, keys):
    with pytest.raises(ConfigError) as err:
        tiny_config(tmp_path, tiny_llama, **train).validate()
    assert all(key in str(err.value) for key in keys), str(err.value)


def test_unsupervised_simcse_with_text_pairs_is_refused(tmp_path, tiny_llama):
    cfg = tiny_config(tmp_path, tiny_llama, simcse="unsupervised")
    cfg.data.text_pair_ratio = 0.25
    with pytest.raises(ConfigError, match="data.text_pair_ratio"):
        cfg.validate()


# ---------------------------------------------------------------- the adaptor (Tables 8 and 9)
def train_capturing_the_encoder(cfg, monkeypatch) -> CaptionEncoder:
    loaded = []
    real_load = stage1_mod.load_encoder
    monkeypatch.setattr(stage1_mod, "load_encoder", lambda c: loaded.append(real_load(c)) or loaded[-1])
    train_stage1(cfg)
    return loaded[0]


def test_frozen_llm_trains_only_the_adaptor_and_the_folder_applies_it(tmp_path, tiny_llama, monkeypatch):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=3, save_every=1, lr=1e-2)
    cfg.model.lora, cfg.model.freeze_llm = None, True
    cfg.model.adaptor = {"kind": "mlp", "num_blocks": 1, "expansion": 2}
    trained = train_capturing_the_encoder(cfg, monkeypatch)
    base = CaptionEncoder.from_pretrained(tiny_llama, instruction=cfg.model.instruction,
                                          max_length=cfg.model.max_length)
    base_weights = base.model.state_dict()
    for name, tensor in trained.model.state_dict().items():  # the LLM: bit-identical
        assert torch.equal(tensor, base_weights[name]), name
    fresh = build_encoder_adaptor(cfg.model.adaptor, trained.dim)
    assert any(not torch.equal(a, b) for a, b in zip(trained.adaptor.state_dict().values(),
                                                      fresh.state_dict().values()))
    run = Path(cfg.train.output_dir)
    for checkpoint in list_checkpoints(run / "checkpoints"):
        saved = load_file(str(checkpoint / "weights.safetensors"))
        assert saved and all(name.startswith("adaptor.") for name in saved), sorted(saved)[:5]

    final = run / "final"
    assert json.loads((final / "caption_encoder.json").read_text())["format"] == "base"
    assert sorted(p.name for p in final.glob("*.safetensors")) == ["adaptor.safetensors"]
    loaded = CaptionEncoder.from_pretrained(final)
    captions = ["a red cat", "two right", "the fish is white"]
    want = F.normalize(trained.adaptor(pooled(base, captions)), dim=-1)  # base LLM, pooled, then the adaptor
    torch.testing.assert_close(loaded.encode(captions), want.detach(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(loaded.encode(captions), base.encode(captions), atol=1e-3)


def pooled(encoder: CaptionEncoder, captions: list[str]) -> torch.Tensor:
    batch = encoder.tokenize(captions)
    with torch.no_grad():
        return encoder(**batch)


def test_a_store_made_without_the_stage1_adaptor_is_refused(tmp_path, tiny_llama):
    encoder = CaptionEncoder.from_pretrained(tiny_llama, adaptor={"kind": "mlp", "num_blocks": 1})
    encoder.set_llm_trainable(False)
    encoder.save_pretrained(tmp_path / "enc")
    records, _ = read_caption_records(write_records(tmp_path / "captions.jsonl"))
    expected = expected_identity_of_folder(tmp_path / "enc")
    with_adaptor = write_embedding_store(CaptionEncoder.from_pretrained(tmp_path / "enc"), records, tmp_path / "a")
    EmbeddingStore.open(with_adaptor, expected_identity=expected)  # the folder's own encoder: accepted
    without = write_embedding_store(CaptionEncoder.from_pretrained(tiny_llama), records, tmp_path / "b")
    with pytest.raises(StoreMismatchError, match="adaptor"):
        EmbeddingStore.open(without, expected_identity=expected)
    # other adaptor weights: the same settings, another fingerprint
    other = CaptionEncoder.from_pretrained(tmp_path / "enc")
    with torch.no_grad():
        other.adaptor.out.bias.add_(0.5)
    assert store_identity(other)["weights_fingerprint"] != expected["weights_fingerprint"]


def test_stage1_adaptor_beside_lora_trains_and_round_trips(tmp_path, tiny_llama, monkeypatch):
    cfg = tiny_config(tmp_path, tiny_llama, max_steps=2, lr=1e-2)
    cfg.model.adaptor = {"kind": "transformer", "num_blocks": 1, "num_latents": 4, "num_heads": 2}
    trained = train_capturing_the_encoder(cfg, monkeypatch)
    final = Path(cfg.train.output_dir) / "final"
    assert json.loads((final / "caption_encoder.json").read_text())["format"] == "adapter"
    assert {"adapter_model.safetensors", "adaptor.safetensors"} <= {p.name for p in final.glob("*.safetensors")}
    loaded = CaptionEncoder.from_pretrained(final)
    captions = ["a red cat", "two right"]
    torch.testing.assert_close(loaded.encode(captions), trained.encode(captions), atol=1e-6, rtol=1e-6)
    assert expected_identity_of_folder(final) == store_identity(loaded)


@pytest.mark.parametrize("model, train, keys", [
    ({"freeze_llm": True}, {}, ["model.freeze_llm", "model.lora"]),
    ({"freeze_llm": True, "lora": None}, {}, ["model.freeze_llm", "model.adaptor"]),
    ({"freeze_llm": True, "lora": None, "adaptor": {"kind": "mlp"}}, {"mntp_weight": 0.5},
     ["train.mntp_weight", "model.freeze_llm"]),
    ({"adaptor": {"kind": "mlp"}}, {"simcse": "none", "mntp_weight": 0.5}, ["model.adaptor", "train.simcse"]),
    ({"adaptor": {"kind": "mlpp"}}, {}, ["model.adaptor"]),
    ({"adaptor": {"kind": "mlp", "embed_dim": 8}}, {}, ["model.adaptor", "embed_dim"]),
    ({"adaptor": {"kind": "mlp"}}, {"fsdp": True}, ["train.fsdp", "model.adaptor"]),
])
def test_bad_stage1_adaptor_setting_is_refused_naming_the_keys(tmp_path, tiny_llama, model, train, keys):
    cfg = tiny_config(tmp_path, tiny_llama, **train)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert all(key in str(err.value) for key in keys), str(err.value)
