"""Method (d): [LLM ‖ CLIP text] caption embeddings, offline and online alike."""
from pathlib import Path

import pytest
import torch
from helpers import logged_losses
from test_stage2 import REPO, config, write_dataset  # the stage-2 tiny setup

from llm2clip import LLM2CLIP
from llm2clip.baseline import HFClipBaseline
from llm2clip.cli import main as cli_main
from llm2clip.data.records import read_caption_records
from llm2clip.embeddings import StoreMismatchError, write_embedding_store
from llm2clip.text import CaptionEncoder, ConcatTextEncoder, load_caption_encoder
from llm2clip.train.metrics_log import MetricsLog
from llm2clip.train.stage2 import train_stage2

CAPTIONS = ["red on the left", "a picture whose right half is blue and the rest is grey", "green"]


@pytest.fixture(scope="module")
def stage1_folder(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage1") / "final"
    CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def concat_folder(stage1_folder, tiny_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("concat") / "encoder"
    assert cli_main(["concat-encoder", "--llm", stage1_folder, "--clip-text", tiny_clip, "--out", str(out)]) == 0
    return str(out)


def test_concat_is_the_two_embeddings_side_by_side(concat_folder, stage1_folder, tiny_clip):
    encoder = load_caption_encoder(concat_folder, precision="fp32")
    assert isinstance(encoder, ConcatTextEncoder) and encoder.dim == 32 + 24
    llm = CaptionEncoder.from_pretrained(stage1_folder, precision="fp32").encode(CAPTIONS)
    clip = HFClipBaseline.from_pretrained(tiny_clip).encode_text(CAPTIONS)
    torch.testing.assert_close(encoder.encode(CAPTIONS, batch_size=2), torch.cat([llm, clip], dim=-1))
    with torch.no_grad():  # the online path (tokenise + forward, one padded batch) gives the same numbers
        online = encoder(**encoder.tokenize(CAPTIONS))
    torch.testing.assert_close(online, torch.cat([llm, clip], dim=-1), atol=1e-5, rtol=1e-5)
    assert encoder.identity()["concat_clip_text"] == tiny_clip


def test_stage2_offline_equals_online_frozen_with_the_concat_encoder(tmp_path, tiny_visions, concat_folder):
    online = config(tmp_path / "online", tiny_visions, concat_folder, mode="online_frozen", max_steps=4)
    offline = config(tmp_path / "offline", tiny_visions, concat_folder, mode="offline", max_steps=4)
    records, _ = read_caption_records(offline.data.train, caption_fields=["raw_caption", "longSV"],
                                      require_all_fields=False)
    offline.data.embeddings = str(write_embedding_store(load_caption_encoder(concat_folder, precision="fp32"),
                                                        records, tmp_path / "store", dtype="fp32", shard_size=8))
    a, b = train_stage2(online), train_stage2(offline)
    losses = logged_losses(Path(a["output_dir"]))
    assert logged_losses(Path(b["output_dir"])) == pytest.approx(losses, abs=1e-5)
    model = LLM2CLIP.from_pretrained(b["model"])  # final/ carries the concat encoder: both sides encode
    assert model.config.text_dim == 56 and isinstance(model.caption_encoder, ConcatTextEncoder)
    with torch.no_grad():
        text = model.encode_text(CAPTIONS)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))


def test_a_store_of_the_llm_alone_is_refused_for_the_concat_encoder(tmp_path, tiny_visions, concat_folder,
                                                                     stage1_folder):
    cfg = config(tmp_path, tiny_visions, concat_folder, mode="offline", max_steps=2)
    records, _ = read_caption_records(cfg.data.train, caption_fields=["raw_caption", "longSV"],
                                      require_all_fields=False)
    llm_only = CaptionEncoder.from_pretrained(stage1_folder, precision="fp32")
    cfg.data.embeddings = str(write_embedding_store(llm_only, records, tmp_path / "store", dtype="fp32"))
    with pytest.raises(StoreMismatchError, match="concat_clip_text"):
        train_stage2(cfg)


def test_concat_encoder_refuses_a_non_empty_output_and_a_vision_only_clip(stage1_folder, tiny_visions, tmp_path,
                                                                          capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert cli_main(["concat-encoder", "--llm", stage1_folder, "--clip-text", tiny_visions["clip"],
                     "--out", str(tmp_path / "taken")]) == 2
    assert cli_main(["concat-encoder", "--llm", stage1_folder, "--clip-text", tiny_visions["clip"],
                     "--out", str(tmp_path / "new")]) == 2
    assert "not a CLIP or SigLIP model" in capsys.readouterr().err


# ------------------------------------------------------------------ Table 10's method (d)
def by_hand_clip_loss(image, text, scale):
    """Symmetric InfoNCE written out: -mean log softmax of the diagonal, both directions."""
    logits = scale * image @ text.T
    return -(logits.log_softmax(1).diagonal().mean() + logits.log_softmax(0).diagonal().mean()) / 2


def by_hand_siglip_loss(image, text, scale, bias):
    logits = scale * image @ text.T + bias
    signs = 2 * torch.eye(len(image)) - 1
    return -torch.nn.functional.logsigmoid(signs * logits).sum() / len(image)


def multi_term_model(tiny_visions, terms, loss):
    """A method-(c)/(d) model (LLM 32 + CLIP-T 24 wide) with a different temperature (and
    bias) per term, so a mix-up shows: llm 1.0, then 2.0, 3.0 for the others in order."""
    from llm2clip.model import LLM2CLIPConfig

    torch.manual_seed(0)
    config = LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=32 + 24, clip_text_dim=24, embed_dim=16,
                            adaptor={"kind": "mlp", "num_blocks": 1}, loss_terms=list(terms),
                            logit_bias_init=-3.0 if loss == "siglip" else None)
    model = LLM2CLIP(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(1.0)
        for value, term in enumerate(terms[1:], start=2):
            model.multi.logit_scales[term].fill_(float(value))
            if loss == "siglip":
                model.multi.logit_biases[term].fill_(-float(value))
    return model


def random_concat_captions():
    from torch.nn.functional import normalize

    return torch.cat([normalize(torch.randn(6, 32), dim=-1), normalize(torch.randn(6, 24), dim=-1)], dim=-1)


def assert_term_losses(out, pairs, loss):
    """`out`'s per-term and total losses equal the losses written out on `pairs`
    ({term: (first, second, log scale)})."""
    expected = {term: by_hand_clip_loss(a, b, torch.tensor(s).exp()) if loss == "clip" else
                by_hand_siglip_loss(a, b, torch.tensor(s).exp(), -3.0 if term == "llm" else -s)
                for term, (a, b, s) in pairs.items()}
    for term, value in expected.items():
        torch.testing.assert_close(out[f"loss_{term}"], value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["loss"], sum(expected.values()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_method_d_loss_is_the_sum_of_three_contrastive_losses_computed_independently(tiny_visions, loss):
    from torch.nn.functional import normalize

    from llm2clip.train.stage2_objective import Stage2Objective

    model = multi_term_model(tiny_visions, ["llm", "clip_text", "cat"], loss)
    pixels, captions = torch.randn(6, 3, 32, 32), random_concat_captions()
    with torch.no_grad():
        out = Stage2Objective(model, loss)(pixels=pixels, text_embeddings=captions)

        pooled = model.vision(pixels)
        image = normalize(pooled @ model.projection.weight.T, dim=-1)
        cat_image = normalize(pooled @ model.multi.cat_image.weight.T, dim=-1)
        llm = normalize(model.adaptor(captions[:, :32]), dim=-1)
        clip = normalize(captions[:, 32:] @ model.multi.clip_text.weight.T, dim=-1)
        cat = normalize(torch.cat([llm, clip], dim=-1) @ model.multi.cat_text.weight.T, dim=-1)
        assert cat.shape == (6, 32)  # Appendix A: the concatenation head is twice as wide
        assert_term_losses(out, {"llm": (image, llm, 1.0), "clip_text": (image, clip, 2.0),
                                 "cat": (cat_image, cat, 3.0)}, loss)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_method_c_adds_a_text_text_term_between_the_clip_text_and_llm_spaces(tiny_visions, loss):
    from torch.nn.functional import normalize

    from llm2clip.model import LLM2CLIPConfig
    from llm2clip.multi_encoder import METHOD_C
    from llm2clip.train.stage2_objective import Stage2Objective

    model = multi_term_model(tiny_visions, METHOD_C, loss)
    pixels, captions = torch.randn(6, 3, 32, 32), random_concat_captions()
    with torch.no_grad():
        out = Stage2Objective(model, loss)(pixels=pixels, text_embeddings=captions)
        image = normalize(model.vision(pixels) @ model.projection.weight.T, dim=-1)
        llm = normalize(model.adaptor(captions[:, :32]), dim=-1)
        clip = normalize(captions[:, 32:] @ model.multi.clip_text.weight.T, dim=-1)
        assert_term_losses(out, {"llm": (image, llm, 1.0), "clip_text": (image, clip, 2.0),
                                 "clip_text_llm": (clip, llm, 3.0)}, loss)
    # the text-text term trains but does not encode: the model encodes with the LLM's term
    assert model.inference_term == "llm"
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text_embeddings(captions), llm)
    with pytest.raises(ValueError, match="'clip_text_llm' contrasts two text spaces"):
        model.encode_text_embeddings(captions, term="clip_text_llm")
    with pytest.raises(ValueError, match="contrasts two text spaces and cannot encode images"):
        LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=56, clip_text_dim=24, loss_terms=METHOD_C,
                       inference_term="clip_text_llm").check()


def method_d_args(tmp_path, tiny_visions, caption_encoder, mode, store=None) -> list[str]:
    data, _ = write_dataset(tmp_path / "data")
    args = ["stage2", "--config", str(REPO / "configs/stage2/tiny.yaml"),
            "--set", f"model.vision={tiny_visions['clip']}", "--set", f"model.caption_encoder={caption_encoder}",
            "--set", "model.loss_terms=[llm, clip_text, cat]", "--set", f"data.train={data}",
            "--set", f"train.output_dir={tmp_path / 'run'}", "--set", f"train.mode={mode}",
            "--set", "train.max_steps=4"]
    return args + (["--set", f"data.embeddings={store}"] if store else [])


@pytest.mark.slow
def test_method_d_trains_through_the_cli_offline_as_online_and_encodes_with_the_concat_head(
        tmp_path, tiny_visions, concat_folder):
    encoder = load_caption_encoder(concat_folder, precision="fp32")
    data, _ = write_dataset(tmp_path / "store-data")
    records, _ = read_caption_records(data, caption_fields=["raw_caption", "longSV"], require_all_fields=False)
    store = write_embedding_store(encoder, records, tmp_path / "store", dtype="fp32", shard_size=8)
    assert cli_main(method_d_args(tmp_path / "offline", tiny_visions, concat_folder, "offline", store)) == 0
    assert cli_main(method_d_args(tmp_path / "online", tiny_visions, concat_folder, "online_frozen")) == 0

    rows = [r for r in MetricsLog(tmp_path / "offline" / "run" / "metrics.jsonl").read() if "loss" in r]
    assert len(rows) == 4 and all(
        r["loss"] == pytest.approx(r["loss_llm"] + r["loss_clip_text"] + r["loss_cat"], rel=1e-5) for r in rows)
    assert logged_losses(tmp_path / "online" / "run") == pytest.approx(logged_losses(tmp_path / "offline" / "run"),
                                                                        abs=1e-5)

    model = LLM2CLIP.from_pretrained(tmp_path / "offline" / "run" / "final").eval()
    assert model.config.loss_terms == ["llm", "clip_text", "cat"] and model.inference_term == "cat"
    with torch.no_grad():
        text = model.encode_text(CAPTIONS)
        by_head = {term: model.encode_text_embeddings(encoder.encode(CAPTIONS), term=term)
                   for term in ("llm", "clip_text", "cat")}
        image = model.encode_image(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(text, by_head["cat"])  # the paper's (d) row encodes with the concatenation head
    assert text.shape == (3, 64) and image.shape == (2, 64)  # 2 x embed_dim (32)
    assert by_head["llm"].shape == by_head["clip_text"].shape == (3, 32)


@pytest.mark.slow
def test_method_c_trains_offline_through_the_cli_and_encodes_with_the_llm_term(tmp_path, tiny_visions, concat_folder):
    encoder = load_caption_encoder(concat_folder, precision="fp32")
    data, _ = write_dataset(tmp_path / "store-data")
    records, _ = read_caption_records(data, caption_fields=["raw_caption", "longSV"], require_all_fields=False)
    store = write_embedding_store(encoder, records, tmp_path / "store", dtype="fp32", shard_size=8)
    args = method_d_args(tmp_path, tiny_visions, concat_folder, "offline", store)
    assert cli_main(args + ["--set", "model.loss_terms=[llm, clip_text, clip_text_llm]"]) == 0
    rows = [r for r in MetricsLog(tmp_path / "run" / "metrics.jsonl").read() if "loss" in r]
    assert len(rows) == 4 and all(r["loss"] == pytest.approx(
        r["loss_llm"] + r["loss_clip_text"] + r["loss_clip_text_llm"], rel=1e-5) for r in rows)
    model = LLM2CLIP.from_pretrained(tmp_path / "run" / "final").eval()
    assert model.config.loss_terms == ["llm", "clip_text", "clip_text_llm"] and model.inference_term == "llm"
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(CAPTIONS),
                                   model.encode_text_embeddings(encoder.encode(CAPTIONS), term="llm"))


def test_method_d_needs_a_concat_encoder(tmp_path, tiny_visions, stage1_folder, capsys):
    assert cli_main(method_d_args(tmp_path / "a", tiny_visions, stage1_folder, "online_frozen")) == 2
    assert "need a concat caption encoder" in capsys.readouterr().err
    assert cli_main(method_d_args(tmp_path / "b", tiny_visions, stage1_folder, "online_frozen")
                    + ["--set", "model.loss_terms=[clip, cat]"]) == 2
    assert "model.loss_terms ['clip', 'cat']: each must be one of" in capsys.readouterr().err
