"""Promises of README.md and docs/reliability.md that had no test able to fail (issue 20)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from test_benchmarks import image, write_json

from llm2clip.cli import main as cli_main
from llm2clip.data.errors import DataError
from llm2clip.text import CaptionEncoder


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def write_caption_file(path: Path, n: int = 10) -> Path:
    path.write_text("".join(json.dumps({"id": f"s{i}", "raw_caption": f"a photo {i} of a cat",
                                        "shortSV": f"cat number {i}"}) + "\n" for i in range(n)))
    return path


# ------------------------------------------------------------------ embed
def test_embed_rank_and_world_size_from_the_cli_finish_the_store_of_one_job(tmp_path, tiny_llama):
    """Two independent jobs (`--rank 0/1 --world-size 2`, no torchrun) write the same
    store as one job; the store opens only once both have finished."""
    from llm2clip.embeddings import EmbeddingStore, IncompleteStoreError

    data = write_caption_file(tmp_path / "captions.jsonl")
    common = ["embed", "--model", tiny_llama, "--data", str(data), "--fields", "raw_caption", "shortSV",
              "--shard-size", "3", "--precision", "fp32", "--device", "cpu", "--dtype", "fp32"]
    assert cli_main(common + ["--out", str(tmp_path / "one")]) == 0
    split = tmp_path / "split"
    assert cli_main(common + ["--out", str(split), "--rank", "1", "--world-size", "2"]) == 0
    with pytest.raises(IncompleteStoreError):
        EmbeddingStore.open(split)
    assert cli_main(common + ["--out", str(split), "--rank", "0", "--world-size", "2"]) == 0
    assert folder_bytes(split) == folder_bytes(tmp_path / "one")


def test_a_store_mismatch_names_every_differing_key(tmp_path, tiny_llama):
    from llm2clip.data.records import read_caption_records
    from llm2clip.embeddings import EmbeddingStore, StoreMismatchError, write_embedding_store
    from llm2clip.embeddings.identity import store_identity

    records, _ = read_caption_records(write_caption_file(tmp_path / "c.jsonl"), caption_fields=["raw_caption"])
    written = write_embedding_store(CaptionEncoder.from_pretrained(tiny_llama), records, tmp_path / "store")
    other = CaptionEncoder.from_pretrained(tiny_llama, pooling="last", max_length=32, instruction="Describe:")
    with pytest.raises(StoreMismatchError) as err:
        EmbeddingStore.open(written, expected_identity=store_identity(other))
    for key in ("pooling", "max_length", "instruction"):
        assert f"{key}:" in str(err.value), (key, str(err.value))


# ------------------------------------------------------------------ loading
def test_lora_true_means_the_papers_lora(tiny_llama, tmp_path):
    """Paper (and configs/stage1/paper.yaml): r 16, alpha 32, dropout 0.05, on every
    attention and MLP projection; the saved folder records the same."""
    encoder = CaptionEncoder.from_pretrained(tiny_llama, lora=True)
    peft = encoder.model.peft_config["default"]
    assert (peft.r, peft.lora_alpha, peft.lora_dropout) == (16, 32, 0.05)
    assert set(peft.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    wrapped = {name.rsplit(".", 1)[-1] for name, module in encoder.model.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == set(peft.target_modules)  # every one of them exists in the model and got an adapter
    encoder.save_pretrained(tmp_path / "saved")
    again = CaptionEncoder.from_pretrained(str(tmp_path / "saved"))
    reloaded = again.model.peft_config["default"]
    assert (reloaded.r, reloaded.lora_alpha, reloaded.lora_dropout) == (16, 32, 0.05)


def _pickle_instead_of_safetensors(folder: Path) -> None:
    for weights in folder.rglob("*.safetensors"):
        torch.save({"w": torch.zeros(1)}, weights.with_name("pytorch_model.bin"))
        weights.unlink()


def test_pickle_weights_are_refused_by_the_baseline_and_the_model_loaders(tmp_path, tiny_clip, tiny_visions,
                                                                          tiny_llama):
    from llm2clip import LLM2CLIP
    from llm2clip.baseline.hf_clip import HFClipBaseline
    from llm2clip.baseline.text_tower import SentenceTextTower
    from llm2clip.model import LLM2CLIPConfig

    clip = tmp_path / "clip"
    shutil.copytree(tiny_clip, clip)
    _pickle_instead_of_safetensors(clip)
    with pytest.raises(ValueError, match="pickle"):
        HFClipBaseline.from_pretrained(str(clip))
    with pytest.raises(ValueError, match="pickle"):
        SentenceTextTower(str(clip))

    encoder = CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    model = LLM2CLIP(LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=encoder.dim, embed_dim=16), caption_encoder=encoder)
    for part in ("vision", "caption_encoder"):
        folder = tmp_path / f"model-{part}"
        model.save_pretrained(folder)
        _pickle_instead_of_safetensors(folder / part)
        with pytest.raises(ValueError, match="pickle"):
            LLM2CLIP.from_pretrained(folder)


# ------------------------------------------------------------------ eval
def test_eval_cra_limit_uses_the_first_n_records(tiny_llama, tmp_path, capsys):
    """`--limit 5` = the same command on a file of the first 5 records."""
    items = [{"image": f"{i}.jpg", "caption": [f"a photo number {i} of a cat", f"cat picture {i}"]} for i in range(9)]
    full, head = write_json(tmp_path / "full.json", items), write_json(tmp_path / "head.json", items[:5])
    assert cli_main(["eval", "cra", "--model", tiny_llama, "--data", str(full), "--limit", "5",
                     "--out", str(tmp_path / "limited.json")]) == 0
    assert cli_main(["eval", "cra", "--model", tiny_llama, "--data", str(head), "--out", str(tmp_path / "head.json.out")]) == 0
    limited, expected = (json.loads((tmp_path / f).read_text()) for f in ("limited.json", "head.json.out"))
    assert limited["n"] == 5 and limited == expected


def test_a_benchmark_image_that_is_a_symlink_out_of_its_root_is_refused(tmp_path):
    from llm2clip.eval.datasets.karpathy import read_karpathy

    image(tmp_path / "secret.jpg")
    (tmp_path / "root" / "images").mkdir(parents=True)
    (tmp_path / "root" / "images" / "a.jpg").symlink_to(tmp_path / "secret.jpg")
    image(tmp_path / "root" / "images" / "b.jpg")
    path = write_json(tmp_path / "root" / "t.json", [{"image": "images/b.jpg", "caption": "fine"},
                                                     {"image": "images/a.jpg", "caption": "a link out"}])
    with pytest.raises(DataError, match="leaves the image root") as err:
        read_karpathy(path)
    assert "t.json: row 1" in str(err.value) and "images/a.jpg" in str(err.value)


# ------------------------------------------------------------------ webdataset
def test_resampled_shards_feed_more_processes_than_shards_with_replacement(tmp_path):
    """README: `data.resampled: true` draws shards with replacement, per rank and epoch, a
    function of the seed; without it, 2 shards cannot feed 3 processes."""
    from test_webdataset import write_shards

    from llm2clip.data.caption_choice import CaptionChoice
    from llm2clip.data.webdataset_source import WebDatasetStream

    shards, _ = write_shards(tmp_path, per_shard=9, unsafe=False)  # 17 samples: shards of 9 and 8
    choice = CaptionChoice(("caption",), (), 0.0, 0)

    def stream(rank: int, seed: int = 0, resampled: bool = True) -> WebDatasetStream:
        return WebDatasetStream(shards, lambda images: torch.zeros(len(images), 3, 4, 4), choice, batch_size=4,
                                seed=seed, rank=rank, world_size=3, resampled=resampled, shuffle_buffer=0)

    def ids(s: WebDatasetStream, batches: int = 12) -> list[str]:
        out = []
        for batch, _ in zip(iter(s), range(batches)):
            out += batch["ids"] + [i for i, _ in batch["skipped"]]
        return out

    with pytest.raises(DataError, match="cannot feed 3 processes"):
        stream(0, resampled=False)
    per_rank = [ids(stream(r)) for r in range(3)]
    assert all(len(r) == 48 for r in per_rank)  # every rank is fed, past the 17 samples
    assert per_rank[0] == ids(stream(0))  # a function of (seed, rank)
    assert len({tuple(r) for r in per_rank}) == 3  # ranks draw independently
    assert ids(stream(0, seed=1)) != per_rank[0]
    # with replacement: some epoch of some rank reads one shard twice (a sample twice in a row of 17)
    repeats = [r[e * 17:(e + 1) * 17] for r in per_rank for e in range(2)]
    assert any(len(set(epoch)) < len(epoch) for epoch in repeats)


# ------------------------------------------------------------------ resume
@pytest.mark.distributed
def test_resume_under_torchrun_equals_an_uninterrupted_run(tmp_path, tiny_llama):
    """Two processes, LoRA dropout on (each rank's RNG must replay): 2 steps, then
    `--resume` to 4, equals 4 steps straight. A constant learning rate: with a decaying
    schedule a 2-step run is not the first half of a 4-step one."""
    from helpers import cli_under_torchrun, last_checkpoint_weights, logged_losses
    from test_stage1 import write_records

    repo = Path(__file__).resolve().parents[1]
    data = write_records(tmp_path / "captions.jsonl")

    def run(out: Path, steps: int, *extra: str) -> None:
        sets = [f"model.name={tiny_llama}", f"data.train={data}", f"train.output_dir={out}", "model.lora.dropout=0.1",
                f"train.max_steps={steps}", "train.save_every=2", "train.batch_size=4",
                "train.schedule=constant", "train.warmup_steps=0"]
        cli_under_torchrun(2, "stage1", "--config", str(repo / "configs/stage1/tiny.yaml"),
                           *[a for s in sets for a in ("--set", s)], *extra)

    run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    run(tmp_path / "resumed", 4, "--resume")
    assert logged_losses(tmp_path / "resumed") == pytest.approx(logged_losses(tmp_path / "straight"), abs=1e-6)
    a, b = last_checkpoint_weights(tmp_path / "straight"), last_checkpoint_weights(tmp_path / "resumed")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
