"""Method (d): [LLM ‖ CLIP text] caption embeddings, offline and online alike."""
from pathlib import Path

import pytest
import torch
from helpers import logged_losses
from test_stage2 import config  # the stage-2 tiny setup

from llm2clip import LLM2CLIP
from llm2clip.baseline import HFClipBaseline
from llm2clip.cli import main as cli_main
from llm2clip.data.records import read_caption_records
from llm2clip.embeddings import StoreMismatchError, write_embedding_store
from llm2clip.text import CaptionEncoder, ConcatTextEncoder, load_caption_encoder
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
