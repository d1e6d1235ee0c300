"""Bad input never loses data and never silently changes a result (issue 19).

Every case runs through the command line, where a user meets it: the command either does
the right thing or stops with one line `llm2clip: error: ...` (exit 2) naming the file,
key or row, before expensive work and without touching what is already on disk.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_stage1 import write_records
from test_stage2 import write_dataset

from llm2clip.cli import main as cli_main
from llm2clip.embeddings import EmbeddingStore
from llm2clip.text import CaptionEncoder

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exit:  # argparse refuses a bad option value itself
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The `llm2clip: error: ...` line of a refused command (and that there is no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("llm2clip: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stage1_folder(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage1") / "final"
    CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0}).save_pretrained(folder)
    return folder


def stage2_args(tmp_path: Path, tiny_visions, encoder: Path, *sets: str, data: Path | None = None) -> list[str]:
    data = data or write_dataset(tmp_path / "data")[0]
    overrides = [f"model.vision={tiny_visions['clip']}", f"model.caption_encoder={encoder}", f"data.train={data}",
                 f"train.output_dir={tmp_path / 'run'}", "train.mode=online_frozen", "train.max_steps=3", *sets]
    return ["stage2", "--config", REPO / "configs/stage2/tiny.yaml"] + [a for o in overrides for a in ("--set", o)]


def stage1_args(tmp_path: Path, tiny_llama, *sets: str) -> list[str]:
    data = write_records(tmp_path / "captions.jsonl")
    overrides = [f"model.name={tiny_llama}", f"data.train={data}", f"train.output_dir={tmp_path / 'run'}",
                 "train.max_steps=2", *sets]
    return ["stage1", "--config", REPO / "configs/stage1/tiny.yaml"] + [a for o in overrides for a in ("--set", o)]


# ================================================================== data loss
def write_captions(path: Path, ids: list[str], tag: str = "") -> Path:
    path.write_text("".join(json.dumps({"id": i, "raw_caption": f"caption of {i}{tag}"}) + "\n" for i in ids))
    return path


def embed_args(tiny_llama, data: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", "--model", tiny_llama, "--data", data, "--out", out, "--device", "cpu", "--shard-size", "4",
            "--dtype", "fp32", *extra]


def test_embed_over_a_finished_store_of_other_captions_is_refused_unless_overwrite(tmp_path, tiny_llama, capsys):
    out = tmp_path / "store"
    many = write_captions(tmp_path / "many.jsonl", [f"s{i}" for i in range(32)])
    few = write_captions(tmp_path / "few.jsonl", ["x0", "x1", "x2"])
    assert run(capsys, *embed_args(tiny_llama, many, out))[0] == 0
    before = folder_bytes(out)

    code, _, err = run(capsys, *embed_args(tiny_llama, few, out))
    message = one_line_error(err)
    assert code == 2 and str(out) in message and "--overwrite" in message and "--extend" in message
    assert "32" in message  # says what would be lost
    assert folder_bytes(out) == before

    assert run(capsys, *embed_args(tiny_llama, few, out, "--overwrite"))[0] == 0
    assert len(EmbeddingStore.open(out)) == 3


def test_growing_a_store_with_new_ids_needs_extend_and_keeps_every_stored_row(tmp_path, tiny_llama, capsys):
    out = tmp_path / "store"
    old_ids = [f"s{i}" for i in range(10)]
    first = write_captions(tmp_path / "first.jsonl", old_ids)
    grown = write_captions(tmp_path / "grown.jsonl", old_ids + ["s10", "s11", "s12"])
    assert run(capsys, *embed_args(tiny_llama, first, out))[0] == 0
    old = EmbeddingStore.open(out).get_many(old_ids, "raw_caption")
    before = folder_bytes(out)

    code, _, err = run(capsys, *embed_args(tiny_llama, grown, out))
    assert code == 2 and "--extend" in one_line_error(err) and folder_bytes(out) == before

    assert run(capsys, *embed_args(tiny_llama, grown, out, "--extend"))[0] == 0
    store = EmbeddingStore.open(out)
    assert len(store) == 13
    # the two full shards are kept as they were; the short last one is re-cut with the new
    # captions and recomputed by the same encoder (equal up to batching noise)
    for name in ("shard-00000.safetensors", "shard-00001.safetensors"):
        assert (out / name).read_bytes() == before[name]
    np.testing.assert_allclose(store.get_many(old_ids, "raw_caption"), old, atol=1e-6, rtol=0)
    # the same encoder on the new captions alone, as the truth for the added rows
    encoder = CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")
    truth = encoder.encode([f"caption of s{i}" for i in (10, 11, 12)], batch_size=1).numpy()
    np.testing.assert_allclose(store.get_many(["s10", "s11", "s12"], "raw_caption"), truth, atol=1e-5, rtol=0)

    # --extend never replaces a stored caption by another one
    changed = write_captions(tmp_path / "changed.jsonl", old_ids + ["s10", "s11", "s12"], tag=" (edited)")
    before = folder_bytes(out)
    code, _, err = run(capsys, *embed_args(tiny_llama, changed, out, "--extend"))
    assert code == 2 and "s0" in one_line_error(err) and folder_bytes(out) == before


def test_embed_over_an_unfinished_store_of_other_captions_is_refused(tmp_path, tiny_llama, capsys):
    out = tmp_path / "store"
    first = write_captions(tmp_path / "first.jsonl", [f"s{i}" for i in range(12)])
    other = write_captions(tmp_path / "other.jsonl", [f"x{i}" for i in range(12)])
    assert run(capsys, *embed_args(tiny_llama, first, out))[0] == 0
    (out / "store.json").unlink()  # as if the other ranks of that run were still writing
    before = folder_bytes(out)
    code, _, err = run(capsys, *embed_args(tiny_llama, other, out))
    assert code == 2 and "unfinished" in one_line_error(err) and folder_bytes(out) == before
    assert run(capsys, *embed_args(tiny_llama, first, out))[0] == 0  # the original command finishes it
    assert len(EmbeddingStore.open(out)) == 12


def test_stage2_refuses_a_caption_encoder_inside_its_output_dir(tmp_path, tiny_visions, stage1_folder, capsys):
    run_dir = tmp_path / "run"
    inside = run_dir / "final" / "caption_encoder"  # e.g. a previous run's final/caption_encoder
    shutil.copytree(stage1_folder, inside)
    before = folder_bytes(inside)
    code, _, err = run(capsys, *stage2_args(tmp_path, tiny_visions, inside))
    message = one_line_error(err)
    assert code == 2 and "model.caption_encoder" in message and "train.output_dir" in message
    assert folder_bytes(inside) == before
    assert not (run_dir / "metrics.jsonl").exists()  # refused before training


def test_stage1_refuses_a_model_inside_its_output_dir(tmp_path, tiny_llama, capsys):
    inside = tmp_path / "run" / "final"  # e.g. fine-tuning a run's own result again, into the same folder
    shutil.copytree(tiny_llama, inside)
    before = folder_bytes(inside)
    code, _, err = run(capsys, *stage1_args(tmp_path, tiny_llama, f"model.name={inside}"))
    message = one_line_error(err)
    assert code == 2 and "model.name" in message and "train.output_dir" in message
    assert folder_bytes(inside) == before


def test_stage2_final_folder_is_replaced_atomically(tmp_path, tiny_visions, stage1_folder, capsys, monkeypatch):
    from llm2clip.train import stage2 as stage2_mod

    args = stage2_args(tmp_path, tiny_visions, stage1_folder, "train.max_steps=2")
    assert run(capsys, *args)[0] == 0
    final = tmp_path / "run" / "final"
    before = folder_bytes(final)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stage2_mod.shutil, "copytree", disk_full)
    code, _, err = run(capsys, *args, "--set", "train.max_steps=3", "--resume")
    assert code == 2 and "No space left" in one_line_error(err)
    assert folder_bytes(final) == before  # the finished model of the first run, whole
    assert sorted(p.name for p in final.parent.iterdir() if p.name.startswith(".")) == []  # no temp folder left


def test_a_config_file_inside_the_run_folder_is_never_overwritten(tmp_path, tiny_llama, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = write_records(tmp_path / "captions.jsonl")
    user_config = run_dir / "config.yaml"
    user_config.write_text("# my recipe: keep these comments\n"
                           f"model: {{name: {tiny_llama}, max_length: 64, lora: {{r: 4, alpha: 8}}}}\n"
                           f"data: {{train: {data}}}\n"
                           f"train: {{output_dir: {run_dir}, batch_size: 4, max_steps: 2, device: cpu}}  # mine\n")
    written = user_config.read_bytes()
    code, _, err = run(capsys, "stage1", "--config", user_config)
    assert code == 2 and "config.yaml" in one_line_error(err)
    assert user_config.read_bytes() == written
    code, _, err = run(capsys, "stage1", "--config", user_config, "--set", "train.lr=5e-4")
    assert code == 2 and user_config.read_bytes() == written

    # resuming a run from its own record (`--config run/config.yaml --resume`) works and leaves it as it is
    (tmp_path / "other").mkdir()
    assert run(capsys, *stage1_args(tmp_path / "other", tiny_llama))[0] == 0
    record = tmp_path / "other" / "run" / "config.yaml"
    written = record.read_bytes()
    assert run(capsys, "stage1", "--config", record, "--set", "train.max_steps=3", "--resume")[0] == 0
    assert record.read_bytes() == written


# ================================================================== wrong results with exit 0
def write_karpathy(root: Path) -> Path:
    colors = {"red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (240, 230, 40)}
    (root / "images").mkdir(parents=True)
    for name, rgb in colors.items():
        Image.new("RGB", (32, 32), rgb).save(root / "images" / f"{name}.png")
    rows = [{"image": f"images/{n}.png", "caption": [f"a {n} square"]} for n in colors]
    (root / "karpathy.json").write_text(json.dumps(rows))
    return root / "karpathy.json"


@pytest.fixture(scope="module")
def tiny_model(tiny_llama, tiny_visions, tmp_path_factory) -> str:
    from llm2clip import LLM2CLIP
    from llm2clip.model import LLM2CLIPConfig

    folder = tmp_path_factory.mktemp("llm2clip") / "model"
    encoder = CaptionEncoder.from_pretrained(tiny_llama, precision="fp32")
    torch.manual_seed(0)
    LLM2CLIP(LLM2CLIPConfig(vision=tiny_visions["clip"], text_dim=encoder.dim, embed_dim=16),
             caption_encoder=encoder).save_pretrained(folder)
    return str(folder)


def eval_config(tmp_path: Path, model: str, benchmark: str, out: Path, model_name: str = "tiny") -> Path:
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"models: [{{name: '{model_name}', kind: llm2clip, path: {model}}}]\n"
                   f"benchmarks: [{benchmark}]\noutput_dir: {out}\nbatch_size: 3\ndevice: cpu\n")
    return cfg


def test_eval_cache_notices_images_replaced_in_place(tmp_path, tiny_model, capsys):
    karpathy = write_karpathy(tmp_path / "bench")
    cfg = eval_config(tmp_path, tiny_model, f"{{name: colors, kind: karpathy, path: {karpathy}}}", tmp_path / "eval")
    results = tmp_path / "eval" / "results.json"
    assert run(capsys, "eval", "--config", cfg)[0] == 0
    first = json.loads(results.read_text())["benchmarks"]["colors"]["results"]["tiny"]

    images = karpathy.parent / "images"  # same names, same sizes, other pictures: a rotation of the colours
    pictures = {p.name: p.read_bytes() for p in images.iterdir()}
    names = sorted(pictures)
    for name, other in zip(names, names[1:] + names[:1]):
        (images / name).write_bytes(pictures[other])

    assert run(capsys, "eval", "--config", cfg)[0] == 0
    cached = json.loads(results.read_text())["benchmarks"]["colors"]["results"]["tiny"]
    assert run(capsys, "eval", "--config", cfg, "--no-cache")[0] == 0
    fresh = json.loads(results.read_text())["benchmarks"]["colors"]["results"]["tiny"]
    assert fresh != first  # the swap matters, so a stale cache would show
    assert cached == fresh


# Every numeric and choice setting has a range: one bad value each, refused up front naming its key.
STAGE1_BAD = [
    ("train.max_steps=-3", "train.max_steps"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.temperature=-0.05", "train.temperature"),
    ("train.warmup_steps=-5", "train.warmup_steps"),
    ("train.mntp_probability=2", "train.mntp_probability"),
    ("train.device=banana", "train.device"),
    ("train.grad_accum=0", "train.grad_accum"),
    ("train.save_every=0", "train.save_every"),
    ("train.seed=-1", "train.seed"),
    ("train.lr=-1e-3", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.precision=fp8", "train.precision"),
    ("train.schedule=exponential", "train.schedule"),
    ("model.pooling=max", "model.pooling"),
    ("model.lora.r=0", "model.lora.r"),
    ("data.text_pair_ratio=1.5", "data.text_pair_ratio"),
    # wrong types: a word for a number, a number for a list, a list for a mapping, a word for a bool
    ("train.batch_size=eight", "train.batch_size"),
    ("train.batch_size=2.5", "train.batch_size"),
    ("train.lr=fast", "train.lr"),
    ("data.caption_fields=5", "data.caption_fields"),
    ("model.lora=[1, 2]", "model.lora"),
    ("train.save_merged=perhaps", "train.save_merged"),
]
STAGE2_BAD = [
    ("model.embed_dim=-4", "model.embed_dim"),
    ("model.logit_scale_init=0", "model.logit_scale_init"),
    ("model.logit_bias_init=.nan", "model.logit_bias_init"),  # every float must be finite
    ("model.adaptor=abc", "model.adaptor"),
    ("model.adaptor={kind: lstm}", "model.adaptor"),
    ("model.adaptor={kind: mlp, blocks: 2}", "model.adaptor"),  # an option the adaptor does not take
    ("train.device=banana", "train.device"),
    ("train.seed=-1", "train.seed"),
    ("train.mode=offlin", "train.mode"),
    ("train.loss=hinge", "train.loss"),
    ("data.dense_ratio=-0.5", "data.dense_ratio"),
    ("data.shuffle_buffer=-1", "data.shuffle_buffer"),
    ("train.layer_decay=0", "train.layer_decay"),
    ("train.grad_accum=two", "train.grad_accum"),
    ("data.real_fields=7", "data.real_fields"),
    ("model.cache_image_features=perhaps", "model.cache_image_features"),
    ("train.lr_vision=[1e-5]", "train.lr_vision"),
]


@pytest.mark.parametrize("override,key", STAGE1_BAD, ids=[k[0] for k in STAGE1_BAD])
def test_out_of_range_stage1_settings_are_refused_naming_the_key(override, key, tmp_path, tiny_llama, capsys):
    code, _, err = run(capsys, *stage1_args(tmp_path, tiny_llama, override))
    assert code == 2 and key in one_line_error(err)
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written


@pytest.mark.parametrize("override,key", STAGE2_BAD, ids=[k[0] for k in STAGE2_BAD])
def test_out_of_range_stage2_settings_are_refused_naming_the_key(override, key, tmp_path, tiny_visions,
                                                               stage1_folder, capsys):
    code, _, err = run(capsys, *stage2_args(tmp_path, tiny_visions, stage1_folder, override))
    assert code == 2 and key in one_line_error(err)
    assert not (tmp_path / "run").exists()


EVAL_BAD = [  # (override or None, extra benchmark keys, the key the message names)
    ("batch_size=0", "", "batch_size"),
    ("device=banana", "", "device"),
    (None, ", limit: -1", "benchmarks[0].limit"),
    (None, ", limit: 0", "benchmarks[0].limit"),
]


@pytest.mark.parametrize("override,extra,key", EVAL_BAD, ids=[k[2] + k[1] for k in EVAL_BAD])
def test_out_of_range_eval_settings_are_refused_naming_the_key(override, extra, key, tmp_path, tiny_model, capsys,
                                                               monkeypatch):
    from llm2clip.eval import runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_eval_model", lambda *a: pytest.fail("loaded a model"))
    karpathy = write_karpathy(tmp_path / "bench")
    cfg = eval_config(tmp_path, tiny_model, f"{{name: colors, kind: karpathy, path: {karpathy}{extra}}}",
                      tmp_path / "eval")
    code, _, err = run(capsys, "eval", "--config", cfg, *(["--set", override] if override else []))
    assert code == 2 and key in one_line_error(err)


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_eval_cra_limit_must_be_positive(limit, tmp_path, tiny_llama, capsys):
    data = write_records(tmp_path / "captions.jsonl")
    code, _, err = run(capsys, "eval", "cra", "--model", tiny_llama, "--data", data, "--limit", limit)
    assert code == 2 and "--limit" in err and "Traceback" not in err


@pytest.mark.parametrize("device", ["banana", "cuda:7"])
def test_embed_refuses_a_device_that_is_not_there(device, tmp_path, tiny_llama, capsys):
    data = write_captions(tmp_path / "c.jsonl", ["a", "b"])
    code, _, err = run(capsys, "embed", "--model", tiny_llama, "--data", data, "--out", tmp_path / "s",
                       "--device", device)
    assert code == 2 and "--device" in one_line_error(err)


def test_eval_cra_never_writes_its_result_over_its_data(tmp_path, tiny_llama, capsys):
    data = write_records(tmp_path / "captions.jsonl")
    written = data.read_bytes()
    code, _, err = run(capsys, "eval", "cra", "--model", tiny_llama, "--data", data, "--out", data)
    assert code == 2 and "--out" in one_line_error(err) and data.read_bytes() == written


def test_cuda_without_a_gpu_is_a_clear_error_and_the_paper_eval_config_runs_anywhere(tmp_path, tiny_llama, capsys):
    from llm2clip.config import load_config
    from llm2clip.eval.eval_config import EvalConfig

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(capsys, *stage1_args(tmp_path, tiny_llama, "train.device=cuda"))
    assert code == 2 and "train.device" in one_line_error(err) and "CUDA" in err
    assert not (tmp_path / "run").exists()
    assert load_config(EvalConfig, REPO / "configs/eval/paper.yaml").device == "auto"


def test_a_fresh_run_over_a_failed_one_starts_clean_logs(tmp_path, tiny_visions, stage1_folder, capsys, monkeypatch):
    from llm2clip.train import loop as loop_mod

    class Killed(Exception):
        pass

    real_check = loop_mod.check_finite

    def crash_at_step_3(value, step, out):
        if step == 2:
            raise Killed()
        real_check(value, step, out)

    args = stage2_args(tmp_path, tiny_visions, stage1_folder, "train.max_steps=4", "train.save_every=100",
                       "train.batch_size=9")
    monkeypatch.setattr(loop_mod, "check_finite", crash_at_step_3)
    with pytest.raises(Killed):
        cli_main([str(a) for a in args])  # failed before its first checkpoint
    monkeypatch.setattr(loop_mod, "check_finite", real_check)
    run_dir = tmp_path / "run"
    failed_metrics = (run_dir / "metrics.jsonl").read_text()
    assert failed_metrics and (run_dir / "skipped-rank0.jsonl").exists()

    code, out, _ = run(capsys, *args)  # a fresh start, not --resume
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    skipped_rows = (run_dir / "skipped-rank0.jsonl").read_text().splitlines()
    assert len(skipped_rows) == sum(summary["skipped"].values()) > 0
    # the failed run's logs are kept aside, not lost
    backups = [p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("earlier-run-")]
    assert len(backups) == 1 and (backups[0] / "metrics.jsonl").read_text() == failed_metrics
    history = [json.loads(line) for line in (run_dir / "run-history.jsonl").read_text().splitlines()]
    assert [h["start"] for h in history] == ["fresh", "fresh"]


def test_a_resume_without_any_checkpoint_replays_from_step_0_with_clean_logs(tmp_path, tiny_llama, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    assert run(capsys, *stage1_args(tmp_path, tiny_llama, "train.max_steps=3"), "--resume")[0] == 0
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    history = [json.loads(line) for line in (run_dir / "run-history.jsonl").read_text().splitlines()]
    assert [h["start"] for h in history] == ["resume"]


@pytest.mark.parametrize("workers", [0, 1])  # in a DataLoader worker the error arrives wrapped in its traceback
def test_a_nan_in_a_stored_embedding_is_refused_naming_store_id_and_field(workers, tmp_path, tiny_visions,
                                                                         stage1_folder, capsys):
    from llm2clip.data.records import read_caption_records
    from llm2clip.embeddings import write_embedding_store

    data, _ = write_dataset(tmp_path / "data")
    records, _ = read_caption_records(data, caption_fields=["raw_caption", "longSV"], require_all_fields=False)
    encoder = CaptionEncoder.from_pretrained(stage1_folder, precision="fp32")
    real_encode = encoder.encode

    def encode_with_a_nan(texts, **kwargs):
        out = real_encode(texts, **kwargs)
        out[[i for i, t in enumerate(texts) if t == "red on the left"]] = float("nan")
        return out

    encoder.encode = encode_with_a_nan
    store = write_embedding_store(encoder, records, tmp_path / "store", dtype="fp16", shard_size=8)
    code, _, err = run(capsys, *stage2_args(tmp_path, tiny_visions, stage1_folder, "train.mode=offline",
                                            f"data.embeddings={store}", "data.dense_ratio=0",
                                            f"data.num_workers={workers}", data=data))
    message = one_line_error(err)
    assert code == 2 and str(store) in message and "red-left" in message and "raw_caption" in message


# ================================================================== tracebacks become one line
def test_unwritable_output_paths_are_refused_up_front(tmp_path, tiny_llama, tiny_visions, stage1_folder, tiny_model,
                                                      capsys, monkeypatch):
    from llm2clip.eval import runner as runner_mod

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    images, _ = write_dataset(tmp_path / "data")
    captions = write_captions(tmp_path / "c.jsonl", ["a", "b"])
    for bad in (a_file, a_file / "run"):
        code, _, err = run(capsys, *stage1_args(tmp_path, tiny_llama, f"train.output_dir={bad}"))
        assert code == 2 and str(a_file) in one_line_error(err)
        code, _, err = run(capsys, *stage2_args(tmp_path, tiny_visions, stage1_folder, f"train.output_dir={bad}",
                                                data=images))
        assert code == 2 and str(a_file) in one_line_error(err)
        code, _, err = run(capsys, *embed_args(tiny_llama, captions, bad))
        assert code == 2 and str(a_file) in one_line_error(err)
        code, _, err = run(capsys, "eval", "cra", "--model", tiny_llama, "--data", write_records(tmp_path / "r.jsonl"),
                           "--out", a_file / "cra.json")
        assert code == 2 and str(a_file) in one_line_error(err)

    # eval checks its output folder before computing any embedding
    monkeypatch.setattr(runner_mod, "load_eval_model", lambda *a: pytest.fail("loaded a model"))
    karpathy = write_karpathy(tmp_path / "bench")
    cfg = eval_config(tmp_path, tiny_model, f"{{name: colors, kind: karpathy, path: {karpathy}}}", a_file / "eval")
    code, _, err = run(capsys, "eval", "--config", cfg)
    assert code == 2 and str(a_file) in one_line_error(err)


def test_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path, tiny_llama, capsys):
    readonly = Path("/sys/llm2clip-test-run")  # sysfs refuses new entries, even to root
    if not Path("/sys").is_dir() or readonly.exists():
        pytest.skip("no sysfs here")
    code, _, err = run(capsys, *stage1_args(tmp_path, tiny_llama, f"train.output_dir={readonly}"))
    assert code == 2 and "/sys" in one_line_error(err)


def test_the_cli_maps_expected_os_errors_to_one_line_and_keeps_tracebacks_for_bugs(monkeypatch, capsys):
    from llm2clip import cli

    def fails_with(error):
        def run_command(args):
            raise error
        return run_command

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for error in (PermissionError(13, "Permission denied", "/x/y"), IsADirectoryError(21, "Is a directory", "/x"),
                  UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
                  ModuleNotFoundError("timm towers need the optional extra: pip install llm2clip[timm]")):
        parser.set_defaults(run=fails_with(error))
        assert cli.main([]) == 2
        one_line_error(capsys.readouterr().err)
    for bug in (KeyError("x"), RuntimeError("shape mismatch"), TypeError("bad call")):
        parser.set_defaults(run=fails_with(bug))
        with pytest.raises(type(bug)):
            cli.main([])


def test_zero_shot_templates_with_other_braces_are_refused_before_the_model_loads(tmp_path, tiny_model, capsys,
                                                                                   monkeypatch):
    from llm2clip.eval import runner as runner_mod

    monkeypatch.setattr(runner_mod, "load_eval_model", lambda *a: pytest.fail("loaded a model"))
    classes = tmp_path / "classes"
    for name in ("cat", "dog"):
        (classes / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 20, 30)).save(classes / name / "0.png")
    for bad in ("a photo of a {} near {x}.", "a {} and a {}.", "a photo of a {0.real}.", "a { photo of a {}."):
        templates = tmp_path / "templates.txt"
        templates.write_text(f"a photo of a {{}}.\n{bad}\n")
        cfg = eval_config(tmp_path, tiny_model,
                          f"{{name: zs, kind: zeroshot, path: {classes}, templates: {templates}}}", tmp_path / "eval")
        code, _, err = run(capsys, "eval", "--config", cfg)
        message = one_line_error(err)
        assert code == 2 and str(templates) in message and "template 2" in message


def test_a_nul_byte_in_an_image_path_is_a_counted_skip_also_after_resume(tmp_path, tiny_visions, stage1_folder,
                                                                      capsys):
    data, rows = write_dataset(tmp_path / "data")
    with open(data, "a") as handle:
        handle.write(json.dumps({"id": "nul", "image": "images/red-left.png\u0000.png", "raw_caption": "nul"}) + "\n")
    args = stage2_args(tmp_path, tiny_visions, stage1_folder, "train.max_steps=3", "train.save_every=3",
                       "train.batch_size=19", data=data)  # every sample in every step
    assert run(capsys, *args)[0] == 0
    assert run(capsys, *args, "--set", "train.max_steps=5", "--resume")[0] == 0
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped-rank0.jsonl").read_text().splitlines()]
    nul = [row for row in skipped if row["id"] == "nul"]
    assert [row["step"] for row in nul] == [1, 2, 3, 4, 5]
    assert all(row["reason"].startswith("DataError") and "'nul'" in row["reason"] for row in nul)


def test_a_batch_with_every_sample_skipped_names_a_sample_and_why(tmp_path, tiny_visions, stage1_folder, capsys):
    code, _, err = run(capsys, *stage2_args(tmp_path, tiny_visions, stage1_folder, f"data.image_root={tmp_path / 'no'}"))
    message = one_line_error(err)
    assert code == 2 and "no such file" in message and "skipped-rank" in message


def test_a_pickle_adapter_next_to_an_unrelated_safetensors_file_is_refused(tmp_path, stage1_folder, capsys):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "encoder"
    shutil.copytree(stage1_folder, folder)
    adapter = folder / "adapter_model.safetensors"
    torch.save(load_file(str(adapter)), folder / "adapter_model.bin")
    adapter.unlink()
    save_file({"x": torch.zeros(1)}, str(folder / "unrelated.safetensors"))
    data = write_records(tmp_path / "captions.jsonl")
    code, _, err = run(capsys, "eval", "cra", "--model", folder, "--data", data)
    message = one_line_error(err)
    assert code == 2 and "adapter_model.bin" in message and "pickle" in message


# ================================================================== names that become file names
def test_a_model_name_with_slashes_stays_inside_the_eval_cache(tmp_path, tiny_model, capsys):
    karpathy = write_karpathy(tmp_path / "bench")
    out = tmp_path / "work" / "eval"
    cfg = eval_config(tmp_path, tiny_model, f"{{name: colors, kind: karpathy, path: {karpathy}}}", out,
                      model_name="../../team/model")
    assert run(capsys, "eval", "--config", cfg)[0] == 0
    cached = sorted(p.name for p in (out / "cache").iterdir())
    assert len(cached) == 2 and all("/" not in name and not name.startswith(".") for name in cached)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["eval"]
