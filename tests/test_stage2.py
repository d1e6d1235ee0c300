"""Stage 2 on tiny models: it learns, skips bad samples, and saves a working model."""
import json
from pathlib import Path

import pytest
import torch
from helpers import cli_under_accelerate, cli_under_torchrun, last_checkpoint_weights, logged_losses
from PIL import Image

from llm2clip.config import load_config
from llm2clip.eval.retrieval import retrieval_metrics
from llm2clip import LLM2CLIP
from llm2clip.model import LLM2CLIPConfig
from llm2clip.text import CaptionEncoder
from llm2clip.train.stage2 import train_stage2
from llm2clip.train.stage2_config import Stage2Config

REPO = Path(__file__).resolve().parents[1]
COLORS = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (240, 230, 40),
          "black": (10, 10, 10), "white": (250, 250, 250), "purple": (140, 40, 170), "orange": (250, 140, 20)}
SHAPES = ["left", "right"]


def write_dataset(root: Path) -> tuple[Path, list[dict]]:
    """16 images: a colour filling the left or right half; captions say which."""
    (root / "images").mkdir(parents=True)
    rows = []
    for name, rgb in COLORS.items():
        for side in SHAPES:
            image = Image.new("RGB", (32, 32), (128, 128, 128))
            image.paste(rgb, (0, 0, 16, 32) if side == "left" else (16, 0, 32, 32))
            sample_id = f"{name}-{side}"
            image.save(root / "images" / f"{sample_id}.png")
            rows.append({"id": sample_id, "image": f"images/{sample_id}.png", "raw_caption": f"{name} on the {side}",
                         "longSV": f"a picture whose {side} half is {name} and the rest is grey"})
    (root / "images" / "broken.png").write_bytes(b"not a png")
    bad = [{"id": "broken", "image": "images/broken.png", "raw_caption": "broken"},
           {"id": "escape", "image": "../outside.png", "raw_caption": "escape"}]
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + bad))
    return data, rows


@pytest.fixture(scope="module")
def stage1_folder(trained_stage1_folder):
    """A LoRA with non-zero B and dropout 0.1: a stage-2 path that dropped the adapter or
    left the frozen encoder in train mode gives other numbers (conftest.py)."""
    return trained_stage1_folder


@pytest.fixture(scope="module")
def fresh_stage1_folder(tiny_llama, tmp_path_factory):
    """A fresh LoRA (B = 0): the random tiny LLM's own embeddings, which tell these
    colours and sides apart well enough for the learning test's bar."""
    folder = tmp_path_factory.mktemp("stage1") / "final"
    CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0}).save_pretrained(folder)
    return str(folder)


def config(tmp_path, tiny_visions, stage1_folder, **train) -> Stage2Config:
    data, _ = write_dataset(tmp_path / "data")
    overrides = [f"model.vision={tiny_visions['clip']}", f"model.caption_encoder={stage1_folder}",
                 f"data.train={data}", f"train.output_dir={tmp_path / 'run'}"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(Stage2Config, REPO / "configs/stage2/tiny.yaml", overrides)


def t2i_r1(model: LLM2CLIP, rows: list[dict], root: Path) -> float:
    with torch.no_grad():
        images = model.encode_image([Image.open(root / r["image"]).convert("RGB") for r in rows])
        texts = model.encode_text([r["raw_caption"] for r in rows])
    return retrieval_metrics(images, texts, list(range(len(rows))), ks=(1,))["t2i_R@1"]


@pytest.mark.slow
def test_online_frozen_training_learns_and_skips_bad_samples(tmp_path, tiny_visions, fresh_stage1_folder):
    cfg = config(tmp_path, tiny_visions, fresh_stage1_folder, mode="online_frozen", max_steps=40, batch_size=9)
    summary = train_stage2(cfg)
    run = Path(cfg.train.output_dir)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert len(losses) == 40 and sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    assert set(summary["skipped"]) == {"ImageError", "DataError"} and sum(summary["skipped"].values()) >= 2

    model = LLM2CLIP.from_pretrained(summary["model"]).eval()
    _, data_rows = write_dataset(tmp_path / "again")
    assert t2i_r1(model, data_rows, tmp_path / "again") >= 50  # chance: 1/16
    assert (Path(summary["model"]) / "caption_encoder" / "caption_encoder.json").is_file()


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, tiny_visions, stage1_folder, monkeypatch):
    from llm2clip.train import loop as loop_mod

    straight = config(tmp_path / "a", tiny_visions, stage1_folder, mode="online_frozen", max_steps=6, save_every=2)
    crashed = config(tmp_path / "b", tiny_visions, stage1_folder, mode="online_frozen", max_steps=6, save_every=2)
    train_stage2(straight)
    real_check = loop_mod.check_finite

    def crash_at_step_5(value, step, out):
        if step == 4:
            raise Killed()
        real_check(value, step, out)

    monkeypatch.setattr(loop_mod, "check_finite", crash_at_step_5)
    with pytest.raises(Killed):
        train_stage2(crashed)
    monkeypatch.setattr(loop_mod, "check_finite", real_check)
    train_stage2(crashed, resume=True)

    def final(cfg):
        run = Path(cfg.train.output_dir)
        return last_checkpoint_weights(run), logged_losses(run)

    (a, loss_a), (b, loss_b) = final(straight), final(crashed)
    assert a.keys() == b.keys() and len(loss_b) == 6
    # the skip log: one row per skipped sample and step, trimmed back to the checkpoint on
    # resume (the crashed step 5 had logged its skips), so it equals the uninterrupted run's
    skips = [[json.loads(line) for line in (tmp_path / run / "run" / "skipped-rank0.jsonl").read_text().splitlines()]
             for run in ("a", "b")]
    for run, rows in zip(("a", "b"), skips):  # the reasons name the run's own data folder
        for row in rows:
            row["reason"] = row["reason"].replace(str(tmp_path / run), "<data>")
    assert skips[1] == skips[0]
    rows = skips[0]
    assert {r["id"] for r in rows} == {"broken", "escape"} and {r["step"] for r in rows} <= set(range(1, 7))
    assert {r["id"]: r["reason"].split(":")[0] for r in rows} == {"broken": "ImageError", "escape": "DataError"}
    assert len(rows) == len({(r["step"], r["id"]) for r in rows})
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=0)
    assert loss_b == pytest.approx(loss_a, abs=1e-6)


@pytest.mark.distributed
@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, tiny_visions, stage1_folder, launcher):
    data, _ = write_dataset(tmp_path / "data")
    launch = cli_under_torchrun if launcher == "torchrun" else cli_under_accelerate

    def run(nproc: int, batch: int, name: str) -> Path:
        cfg_file = tmp_path / f"{name}.yaml"
        cfg_file.write_text(
            f"model: {{vision: {tiny_visions['clip']}, caption_encoder: {stage1_folder}, embed_dim: 32,"
            f" adaptor: {{kind: mlp, num_blocks: 2}}}}\n"
            f"data: {{train: {data}, real_fields: [raw_caption], dense_fields: [longSV], num_workers: 0}}\n"
            f"train: {{mode: online_frozen, output_dir: {tmp_path / name}, batch_size: {batch}, max_steps: 3,"
            f" lr_vision: 1.0e-3, lr_adaptor: 3.0e-3, warmup_steps: 1, save_every: 3, precision: fp32, device: cpu}}\n")
        launch(nproc, "stage2", "--config", str(cfg_file))
        return tmp_path / name

    one, two = run(1, 8, "one"), run(2, 4, "two")
    a, b = last_checkpoint_weights(one), last_checkpoint_weights(two)
    # Adam divides each gradient by its own running RMS, so float-reassociation noise on a
    # near-zero gradient element can move that weight by a sizeable fraction of lr (1e-3):
    # allow 2e-4 per element, far below what a wrong batch or a missing gather would give
    # (one element of 32 measured 1.07e-4 on one 2-core machine, the same before and after
    # the change that first saw it; the gradient-scale tests compare gradients exactly).
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=2e-4, rtol=1e-4)
    assert logged_losses(two) == pytest.approx(logged_losses(one), abs=1e-5)


def test_a_non_finite_loss_stops_before_the_update_naming_the_last_checkpoint(tmp_path, tiny_visions, stage1_folder,
                                                                             monkeypatch):
    from llm2clip.train.runtime import TrainingError
    from llm2clip.train.stage2_objective import Stage2Objective

    cfg = config(tmp_path, tiny_visions, stage1_folder, mode="online_frozen", max_steps=6, save_every=2)
    real = Stage2Objective.forward
    calls = []

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:  # step 3
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(Stage2Objective, "forward", poisoned)
    with pytest.raises(TrainingError, match="checkpoint-00000002"):
        train_stage2(cfg)
    run = Path(cfg.train.output_dir)
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-00000002"]
    assert len(logged_losses(run)) == 2 and not (run / "final").exists()


def write_store(cfg: Stage2Config, stage1_folder: str, out: Path) -> Path:
    from llm2clip.data.records import read_caption_records
    from llm2clip.embeddings import write_embedding_store

    records, _ = read_caption_records(cfg.data.train, caption_fields=["raw_caption", "longSV"],
                                      require_all_fields=False)
    encoder = CaptionEncoder.from_pretrained(stage1_folder, precision="fp32")
    return write_embedding_store(encoder, records, out, dtype="fp32", shard_size=8)


@pytest.mark.slow
def test_offline_training_equals_online_frozen_training(tmp_path, tiny_visions, stage1_folder):
    """The store is a pure speed-up: same seed and data give the same losses and weights."""
    online = config(tmp_path / "online", tiny_visions, stage1_folder, mode="online_frozen", max_steps=5)
    offline = config(tmp_path / "offline", tiny_visions, stage1_folder, mode="offline", max_steps=5)
    offline.data.embeddings = str(write_store(offline, stage1_folder, tmp_path / "store"))
    a, b = train_stage2(online), train_stage2(offline)
    assert a["skipped"] == b["skipped"] and sum(a["skipped"].values()) > 0
    losses_online, losses_offline = logged_losses(Path(a["output_dir"])), logged_losses(Path(b["output_dir"]))
    assert len(losses_online) == 5 and losses_offline == pytest.approx(losses_online, abs=1e-5)
    assert losses_online[0] != pytest.approx(losses_online[-1], abs=1e-3)  # it did train
    # Adam's per-element normalisation can turn ~1e-7 embedding noise on a near-zero
    # gradient into a visible step (lr is 1e-3 here); 5e-4 is still far below what one
    # wrong embedding moves a weight over 5 steps.
    wa, wb = last_checkpoint_weights(Path(a["output_dir"])), last_checkpoint_weights(Path(b["output_dir"]))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=5e-4, rtol=0)


def test_offline_refuses_a_store_of_another_encoder(tmp_path, tiny_visions, stage1_folder, tiny_llama):
    from llm2clip.embeddings import StoreMismatchError

    cfg = config(tmp_path, tiny_visions, stage1_folder, mode="offline", max_steps=2)
    other = tmp_path / "other-encoder"
    CaptionEncoder.from_pretrained(tiny_llama, pooling="last").save_pretrained(other)
    cfg.data.embeddings = str(write_store(cfg, str(other), tmp_path / "store"))
    with pytest.raises(StoreMismatchError, match="pooling"):
        train_stage2(cfg)


@pytest.mark.slow
def test_online_lora_trains_the_adapter_and_saves_the_tuned_encoder(tmp_path, tiny_visions, stage1_folder):
    cfg = config(tmp_path, tiny_visions, stage1_folder, mode="online_lora", max_steps=4, lr_llm=1e-2)
    summary = train_stage2(cfg)
    tuned = CaptionEncoder.from_pretrained(Path(summary["model"]) / "caption_encoder", precision="fp32")
    before = CaptionEncoder.from_pretrained(stage1_folder, precision="fp32")
    assert tuned.weights_fingerprint() != before.weights_fingerprint()
    changed = {name for name, p in tuned.named_parameters()
               if not torch.equal(p, dict(before.named_parameters())[name])}
    assert changed and all("lora_" in name for name in changed)
    text = ["red on the left", "a picture whose right half is blue and the rest is grey"]
    assert not torch.allclose(tuned.encode(text), before.encode(text))


def test_frozen_vision_groups_stay_exactly_as_loaded(tmp_path, tiny_visions, stage1_folder):
    cfg = config(tmp_path, tiny_visions, stage1_folder, mode="online_frozen", max_steps=3)
    cfg.model.frozen_vision_groups = 2  # embeddings + the first block of the 2-layer tower
    summary = train_stage2(cfg)
    start = LLM2CLIP(LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=32, embed_dim=32)).vision
    tuned = LLM2CLIP.from_pretrained(summary["model"], load_caption_encoder=False).vision
    groups_start, groups_tuned = start.layer_groups(), tuned.layer_groups()
    for depth, (a, b) in enumerate(zip(groups_start, groups_tuned)):
        same = all(torch.equal(x, y) for x, y in zip(a, b))
        assert same == (depth < 2), f"group {depth}: {'unchanged' if same else 'changed'}"


@pytest.mark.slow
def test_cached_features_of_a_frozen_tower_train_exactly_as_the_tower_in_the_loop(tmp_path, tiny_visions,
                                                                                  stage1_folder):
    runs = {}
    for cached in (False, True):
        cfg = config(tmp_path / str(cached), tiny_visions, stage1_folder, mode="online_frozen", max_steps=4)
        cfg.model.frozen_vision_groups = 4  # embeddings, 2 blocks, post-norm: the whole tiny tower
        cfg.model.cache_image_features = cached
        runs[cached] = train_stage2(cfg)
    assert runs[True]["skipped"] == runs[False]["skipped"] and sum(runs[True]["skipped"].values()) > 0
    a, b = Path(runs[False]["output_dir"]), Path(runs[True]["output_dir"])
    assert logged_losses(b) == pytest.approx(logged_losses(a), abs=1e-5)
    wa, wb = last_checkpoint_weights(a), last_checkpoint_weights(b)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-5, rtol=0)
    cfg.model.frozen_vision_groups, cfg.train.output_dir = 3, str(tmp_path / "partly-frozen")
    with pytest.raises(ValueError, match="cache_image_features needs the whole tower frozen"):
        train_stage2(cfg)


@pytest.mark.slow
def test_gradient_checkpointing_covers_the_trained_llm_and_changes_nothing(tmp_path, tiny_visions, stage1_folder):
    from llm2clip.train.stage2 import load_text_side

    runs = {}
    for checkpointing in (False, True):
        cfg = config(tmp_path / str(checkpointing), tiny_visions, stage1_folder, mode="online_lora", max_steps=3,
                     lr_llm=1e-2)
        cfg.model.gradient_checkpointing = checkpointing
        encoder, _ = load_text_side(cfg)
        layers = [m for m in encoder.base_model.modules() if hasattr(m, "gradient_checkpointing")]
        assert layers and all(m.gradient_checkpointing == checkpointing for m in layers)
        runs[checkpointing] = Path(train_stage2(cfg)["output_dir"])
    assert logged_losses(runs[True]) == pytest.approx(logged_losses(runs[False]), abs=1e-5)
    plain, checkpointed = last_checkpoint_weights(runs[False]), last_checkpoint_weights(runs[True])
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=0)


def test_paper_config_trains_every_group_at_lr_1e5_without_warmup(tiny_visions):
    """Appendix A and the official run.sh: lr 1e-5 for the tower, adaptor, projection and
    logit scale alike (the tower's lower layers scaled down by layer decay), no warmup."""
    from types import SimpleNamespace

    from llm2clip.train.stage2 import build_model, param_groups

    cfg = load_config(Stage2Config, REPO / "configs/stage2/paper.yaml", [f"model.vision={tiny_visions['clip']}"])
    assert (cfg.train.warmup_steps, cfg.train.schedule, cfg.train.layer_decay) == (0, "cosine", 0.85)
    model = build_model(cfg, None, SimpleNamespace(dim=32))
    lr_of = {id(p): g["lr"] for g in param_groups(cfg, model, None) for p in g["params"]}
    heads = [model.logit_scale, *model.projection.parameters(), *model.adaptor.parameters()]
    assert {lr_of[id(p)] for p in heads} == {1e-5}
    tower = [lr_of[id(p)] for p in model.vision.parameters() if p.requires_grad]
    assert max(tower) == 1e-5 and min(tower) < 1e-5
