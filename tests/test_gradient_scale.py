"""Equivalence tests that can see the scale of the gradient.

Adam divides every step by the gradient's own RMS and clipping caps its norm, so two runs
whose gradients differ by a constant factor (a doubled loss, a loss scaled by the number
of processes or by grad_accum) train to the same weights: comparing weights or losses
cannot see it. These tests compare the first step's unclipped gradient norm, as the
trainer logs it (`grad_norm` in metrics.jsonl, before clipping), with the norm computed
here another way: from the run's own saved model (lr ~ 0, so final/ holds the initial
weights), the step's samples, and the loss written out in this file. Two processes and
grad_accum 2 must give the gradient of the same mean loss.
"""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import cli_under_torchrun
from PIL import Image
from test_stage2 import write_dataset

from llm2clip import LLM2CLIP
from llm2clip.config import load_config, to_dict
from llm2clip.data.batch_plan import BatchPlan
from llm2clip.data.pair_schedule import PairSchedule
from llm2clip.data.records import read_caption_records
from llm2clip.text import CaptionEncoder
from llm2clip.train.stage1 import train_stage1
from llm2clip.train.stage1_config import Stage1Config
from llm2clip.train.stage2 import train_stage2
from llm2clip.train.stage2_config import Stage2Config

REPO = Path(__file__).resolve().parents[1]
# lr must be > 0: 1e-30 moves no weight of these models by a representable amount (a
# zero-initialised bias becomes ~1e-30), so final/ is the model the first step saw
FROZEN_LR = "1.0e-30"
NO_CLIP = "1.0e9"  # clipping off: grad_norm is the true norm


def first_row(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r.get("step") == 1 and "loss" in r)


def global_norm(params) -> float:
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])).item()


# ------------------------------------------------------------------ stage 2
def clean_records(root: Path) -> tuple[Path, dict[str, dict]]:
    """The 16 readable samples of test_stage2's data (no skipped sample in any batch)."""
    _, rows = write_dataset(root)
    data = root / "clean.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, {r["id"]: r for r in rows}


def stage2_config(tmp_path: Path, tiny_visions, stage1_folder, data: Path, name: str, **train) -> Stage2Config:
    overrides = [f"model.vision={tiny_visions['clip']}", f"model.caption_encoder={stage1_folder}",
                 f"data.train={data}", "data.dense_ratio=0", f"train.output_dir={tmp_path / name}",
                 f"train.lr_vision={FROZEN_LR}", f"train.lr_adaptor={FROZEN_LR}", "train.lr_logit_scale=0",
                 f"train.grad_clip={NO_CLIP}", "train.max_steps=1", "train.warmup_steps=0", "train.save_every=1"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(Stage2Config, REPO / "configs/stage2/tiny.yaml", overrides)


def reference_stage2(final: Path, rows: dict[str, dict], root: Path, micro_batches: list[list[str]],
                     loss_kind: str = "clip"):
    """(loss, gradient norm) of the mean over micro-batches of the symmetric CLIP loss (or
    the sigmoid loss) between the batch's images and its raw captions, from the saved
    model and the stage-1 encoder in eval mode (what frozen means), not through the trainer."""
    model = LLM2CLIP.from_pretrained(final)
    encoder = model.caption_encoder
    assert encoder is not None and not encoder.training
    params = [p for p in model.parameters() if p.requires_grad]
    total = 0.0
    for ids in micro_batches:
        images = [Image.open(root / rows[i]["image"]).convert("RGB") for i in ids]
        image = model.image_space(model.vision(model.vision.preprocess(images)))
        with torch.no_grad():
            captions = encoder.encode([rows[i]["raw_caption"] for i in ids])
        text = model.text_spaces(captions, ["llm"])["llm"]
        logits = model.logit_scale.exp() * image @ text.T
        if loss_kind == "siglip":  # +1 for the pair, -1 for every other, summed, per image
            signs = 2 * torch.eye(len(ids)) - 1
            loss = -F.logsigmoid(signs * (logits + model.logit_bias)).sum() / len(ids) / len(micro_batches)
        else:
            labels = torch.arange(len(ids))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2 / len(micro_batches)
        loss.backward()
        total += loss.item()
    return total, global_norm(params)


def plan_micro_batches(rows: dict, global_batch: int, grad_accum: int, seed: int) -> list[list[str]]:
    ids = list(rows)
    plan = BatchPlan(len(ids), global_batch, seed)
    return [[ids[i] for i in plan.global_indices(m)] for m in range(grad_accum)]


def write_store(cfg: Stage2Config, stage1_folder: str, out: Path) -> Path:
    from llm2clip.embeddings import write_embedding_store

    records, _ = read_caption_records(cfg.data.train, caption_fields=["raw_caption", "longSV"])
    encoder = CaptionEncoder.from_pretrained(stage1_folder, precision="fp32")
    return write_embedding_store(encoder, records, out, dtype="fp32", shard_size=8)


def assert_matches_reference(run: Path, reference: tuple[float, float]):
    row = first_row(run)
    loss, norm = reference
    assert row["loss"] == pytest.approx(loss, rel=1e-4), "the first step's loss is not the batch's loss"
    assert row["grad_norm"] == pytest.approx(norm, rel=1e-3), (
        f"grad_norm {row['grad_norm']} vs {norm} computed from the same weights and samples: "
        f"a factor {row['grad_norm'] / norm:.3f} in the gradient")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale-data")
    path, rows = clean_records(root)
    return path, rows, root


@pytest.fixture(scope="module")
def store(data, tiny_visions, trained_stage1_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale-store")
    cfg = stage2_config(tmp, tiny_visions, trained_stage1_folder, data[0], "unused")
    return str(write_store(cfg, trained_stage1_folder, tmp / "store"))


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_stage2_offline_first_step_gradient_is_the_batch_losss_gradient(tmp_path, tiny_visions,
                                                                        trained_stage1_folder, data, store, tower):
    """CLIP tower with the CLIP loss; SigLIP tower (its pooling head) with the sigmoid loss."""
    path, rows, root = data
    cfg = stage2_config(tmp_path, tiny_visions, trained_stage1_folder, path, "run", mode="offline", batch_size=16,
                        loss=tower)
    cfg.model.vision = tiny_visions[tower]
    cfg.data.embeddings = store
    run = Path(train_stage2(cfg)["output_dir"])
    assert_matches_reference(run, reference_stage2(run / "final", rows, root, [list(rows)], loss_kind=tower))


def test_stage2_online_frozen_grad_accum_2_is_the_mean_of_the_micro_batch_losses(tmp_path, tiny_visions,
                                                                                trained_stage1_folder, data):
    """The frozen encoder carries a non-zero LoRA with dropout 0.1: dropping the adapter
    or leaving it in train mode changes the loss; a missing 1/grad_accum doubles the norm."""
    path, rows, root = data
    cfg = stage2_config(tmp_path, tiny_visions, trained_stage1_folder, path, "run", mode="online_frozen",
                        batch_size=8, grad_accum=2)
    run = Path(train_stage2(cfg)["output_dir"])
    micro = plan_micro_batches(rows, 8, 2, cfg.train.seed)
    assert_matches_reference(run, reference_stage2(run / "final", rows, root, micro))


def _cli_config(cfg: Stage2Config, tmp_path: Path, name: str) -> Path:
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return file


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["offline", "online_frozen"])
def test_stage2_two_processes_with_grad_accum_2_give_the_single_process_gradient(tmp_path, tiny_visions,
                                                                                 trained_stage1_folder, data,
                                                                                 store, mode):
    """2 processes x 4 samples x 2 micro-steps: each micro-step's loss is the global batch
    of 8's, the step's gradient the mean of the two (no rank or accumulation factor)."""
    path, rows, root = data
    cfg = stage2_config(tmp_path, tiny_visions, trained_stage1_folder, path, "run", mode=mode,
                        batch_size=4, grad_accum=2)
    if mode == "offline":
        cfg.data.embeddings = store
    cli_under_torchrun(2, "stage2", "--config", str(_cli_config(cfg, tmp_path, "two")))
    run = tmp_path / "run"
    micro = plan_micro_batches(rows, 8, 2, cfg.train.seed)
    assert_matches_reference(run, reference_stage2(run / "final", rows, root, micro))


def write_clean_shards(root: Path) -> tuple[str, dict[str, dict], Path]:
    """The 16 readable samples as 4 shards of 4 (png + txt), one pair of shards per rank."""
    import io

    import webdataset as wds

    _, rows = write_dataset(root / "src")
    (root / "shards").mkdir()
    for s in range(4):
        with wds.TarWriter(str(root / "shards" / f"{s:05d}.tar")) as sink:
            for row in rows[4 * s:4 * s + 4]:
                buffer = io.BytesIO()
                Image.open(root / "src" / row["image"]).save(buffer, format="PNG")
                sink.write({"__key__": row["id"], "png": buffer.getvalue(), "txt": row["raw_caption"]})
    return str(root / "shards" / "{00000..00003}.tar"), {r["id"]: r for r in rows}, root / "src"


@pytest.mark.distributed
def test_stage2_webdataset_two_processes_give_the_single_process_gradient(tmp_path, tiny_visions,
                                                                          trained_stage1_folder):
    """Global batch 16 = every sample once, on one process or split over two (each rank
    its two shards): the same loss and gradient, the full set's."""
    shards, rows, root = write_clean_shards(tmp_path / "data")
    for nproc in (1, 2):
        cfg = stage2_config(tmp_path, tiny_visions, trained_stage1_folder, "", f"run{nproc}", mode="online_frozen",
                            batch_size=16 // nproc)
        cfg.data.train, cfg.data.train_shards, cfg.data.real_fields = "", shards, ["caption"]
        cfg.data.shuffle_buffer = 0
        if nproc == 1:
            train_stage2(cfg)
        else:
            cli_under_torchrun(2, "stage2", "--config", str(_cli_config(cfg, tmp_path, "two")))
        out = tmp_path / f"run{nproc}"
        assert not any(f.read_text() for f in out.glob("skipped-rank*.jsonl"))
        assert_matches_reference(out, reference_stage2(out / "final", rows, root, [list(rows)]))


# ------------------------------------------------------------------ stage 1
def stage1_config(tmp_path: Path, model: str, name: str, **train) -> Stage1Config:
    from test_stage1 import write_records

    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_records(tmp_path / "captions.jsonl")
    overrides = [f"model.name={model}", f"data.train={data}", f"train.output_dir={tmp_path / name}",
                 f"train.lr={FROZEN_LR}", f"train.grad_clip={NO_CLIP}", "train.max_steps=1", "train.warmup_steps=0",
                 "train.save_every=1"] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config(Stage1Config, REPO / "configs/stage1/tiny.yaml", overrides)


def reference_stage1(cfg: Stage1Config, final: Path, global_batch: int):
    """(loss, gradient norm of the LoRA weights) of the mean SimCSE loss over the step's
    micro-batches, each the schedule's whole global batch, from the saved encoder."""
    records, _ = read_caption_records(cfg.data.train, caption_fields=cfg.data.caption_fields)
    schedule = PairSchedule(records, global_batch_size=global_batch, seed=cfg.train.seed)
    encoder = CaptionEncoder.from_pretrained(str(final), precision="fp32")
    params = [p for name, p in encoder.named_parameters() if "lora_" in name]
    for p in params:
        p.requires_grad_(True)
    total, accum = 0.0, cfg.train.grad_accum
    for micro in range(accum):
        pairs = schedule.global_batch(micro)
        tokens = encoder.tokenize([p.anchor for p in pairs] + [p.positive for p in pairs])
        emb = F.normalize(encoder(**tokens), dim=-1)
        logits = emb[:len(pairs)] @ emb[len(pairs):].T / cfg.train.temperature
        loss = F.cross_entropy(logits, torch.arange(len(pairs))) / accum
        loss.backward()
        total += loss.item()
    return total, global_norm(params)


def test_stage1_grad_accum_2_is_the_mean_of_the_micro_batch_losses(tmp_path, tiny_llama):
    cfg = stage1_config(tmp_path, tiny_llama, "run", batch_size=8, grad_accum=2)
    run = Path(train_stage1(cfg)["output_dir"])
    assert_matches_reference(run, reference_stage1(cfg, run / "final", 8))


@pytest.mark.distributed
def test_stage1_two_processes_with_grad_accum_2_give_the_single_process_gradient(tmp_path, tiny_llama):
    cfg = stage1_config(tmp_path, tiny_llama, "run", batch_size=4, grad_accum=2)
    file = tmp_path / "two.yaml"
    file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    cli_under_torchrun(2, "stage1", "--config", str(file))
    run = tmp_path / "run"
    assert_matches_reference(run, reference_stage1(cfg, run / "final", 8))
