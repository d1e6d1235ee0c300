"""What long runs meet: kill -9 at any moment (embed, stage 1, stage 2), a damaged
checkpoint on disk, a full disk, untrusted weight formats. Every run here is a real
subprocess killed with SIGKILL, then resumed; the result must equal an uninterrupted run."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import last_checkpoint_weights, logged_losses
from test_stage1 import write_records
from test_stage2 import write_dataset

from llm2clip.atomic_file import WriteError, atomic_write_text
from llm2clip.train.checkpoint import list_checkpoints, load_latest, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llm2clip.cli", *args]


def run_to_end(command: list[str]) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def kill_when(command: list[str], ready, timeout: float = 300) -> bool:
    """Start `command`, SIGKILL it as soon as `ready()` holds; False if it finished first."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def folder_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


# ------------------------------------------------------------------ embed
@pytest.mark.slow
def test_embed_killed_three_times_at_random_points_equals_an_uninterrupted_run(tmp_path, tiny_llama):
    records = tmp_path / "captions.jsonl"
    with open(records, "w", encoding="utf-8") as handle:
        for i in range(480):
            handle.write(json.dumps({"id": f"s{i}", "raw_caption": f"caption number {i} " + "word " * (i % 23),
                                     "longSV": f"a longer caption {i} " + "and more " * (i % 37)}) + "\n")
    command = lambda out: cli("embed", "--model", tiny_llama, "--data", str(records), "--out", str(out),  # noqa: E731
                              "--shard-size", "32", "--batch-size", "8", "--device", "cpu")
    run_to_end(command(tmp_path / "reference"))
    n_shards = len(list((tmp_path / "reference").glob("shard-*.safetensors")))
    store = tmp_path / "store"
    rng = random.Random(0)
    kills = 0
    for _ in range(3):  # each kill lands after a random number of further shards
        before = len(list(store.glob("shard-*.safetensors"))) if store.exists() else 0
        target = before + rng.randint(1, max(1, (n_shards - before) // 3))
        kills += kill_when(command(store), lambda: len(list(store.glob("shard-*.safetensors"))) >= target)
    assert kills == 3 and not (store / "store.json").exists()  # really stopped mid-run each time
    run_to_end(command(store))
    assert folder_bytes(store) == folder_bytes(tmp_path / "reference")  # bit for bit; no temp file, no extra key


# ------------------------------------------------------------------ training
def metrics_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_training_killed_and_resumed_equals_an_uninterrupted_run(stage, tmp_path, tiny_llama, tiny_visions):
    if stage == "stage1":
        data = write_records(tmp_path / "captions.jsonl")
        overrides = [f"model.name={tiny_llama}", f"data.train={data}", f"eval.cra={data}", "train.max_steps=8",
                     "train.save_every=2", "train.batch_size=4"]
    else:
        folder = tmp_path / "stage1"
        from llm2clip.text import CaptionEncoder
        CaptionEncoder.from_pretrained(tiny_llama, lora={"r": 4, "alpha": 8, "dropout": 0.0}).save_pretrained(folder)
        data, _ = write_dataset(tmp_path / "data")
        overrides = [f"model.vision={tiny_visions['clip']}", f"model.caption_encoder={folder}", f"data.train={data}",
                     "train.mode=online_frozen", "train.max_steps=8", "train.save_every=2"]

    def command(run: Path, *extra: str) -> list[str]:
        sets = [a for o in overrides + [f"train.output_dir={run}"] for a in ("--set", o)]
        return cli(stage, "--config", str(REPO / "configs" / stage / "tiny.yaml"), *sets, *extra)

    run_to_end(command(tmp_path / "straight"))
    killed = tmp_path / "killed"
    assert kill_when(command(killed), lambda: metrics_lines(killed) >= 5)  # mid-run, between checkpoints
    assert not (killed / "final").exists()
    run_to_end(command(killed, "--resume"))
    a, b = tmp_path / "straight", killed
    assert logged_losses(b) == pytest.approx(logged_losses(a), abs=1e-6) and len(logged_losses(b)) == 8
    wa, wb = last_checkpoint_weights(a), last_checkpoint_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], atol=1e-6, rtol=0)


# ------------------------------------------------------------------ damaged files, full disk
def save_two_checkpoints(root: Path) -> None:
    for step in (2, 4):
        save_checkpoint(root, step, {"w": torch.full((3,), float(step))}, {"state": {}, "param_groups": []}, {}, keep=3)


@pytest.mark.parametrize("damage", ["truncated_weights", "missing_state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, caplog):
    save_two_checkpoints(tmp_path)
    latest = list_checkpoints(tmp_path)[-1]
    if damage == "truncated_weights":
        weights = latest / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-7])
    else:
        (latest / "state.json").unlink()
    state = load_latest(tmp_path)
    assert state["step"] == 2 and torch.equal(state["weights"]["w"], torch.full((3,), 2.0))
    assert "is unusable" in caplog.text and latest.name in caplog.text


class FullDisk:
    """A file object whose writes fail with ENOSPC after `room` bytes."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_a_full_disk_is_a_clear_error_and_the_old_file_survives(tmp_path, monkeypatch):
    import builtins

    import llm2clip.atomic_file as atomic_file

    target = tmp_path / "results.json"
    atomic_write_text(target, '{"good": true}')
    monkeypatch.setattr(atomic_file, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k), room=4),
                        raising=False)
    with pytest.raises(WriteError, match="No space left on device.*untouched"):
        atomic_write_text(target, '{"new": "much longer content"}')
    assert target.read_text() == '{"good": true}' and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_ones(tmp_path, monkeypatch):
    import llm2clip.train.checkpoint as checkpoint

    save_two_checkpoints(tmp_path)

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    with pytest.raises(WriteError, match="previous checkpoints are untouched"):
        save_checkpoint(tmp_path, 6, {"w": torch.zeros(3)}, {"state": {}, "param_groups": []}, {}, keep=3)
    assert len(list_checkpoints(tmp_path)) == 2 and not list(tmp_path.glob(".*tmp"))
    assert load_latest(tmp_path)["step"] == 4


# ------------------------------------------------------------------ untrusted formats
def test_pickle_only_weights_are_refused_everywhere(tmp_path, tiny_llama, tiny_visions):
    import shutil

    from llm2clip.text import CaptionEncoder
    from llm2clip.vision import load_vision_tower

    for source, load in ((tiny_llama, CaptionEncoder.from_pretrained), (tiny_visions["clip"], load_vision_tower)):
        folder = tmp_path / Path(source).name
        shutil.copytree(source, folder)
        weights = next(folder.glob("*.safetensors"))
        torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
        weights.unlink()
        with pytest.raises(ValueError, match="pickle format .pytorch_model.bin.*safetensors only"):
            load(str(folder))


def test_remote_code_in_a_model_folder_never_runs_by_default(tmp_path, tiny_llama):
    import shutil

    from llm2clip.text import CaptionEncoder

    folder = tmp_path / "llm"
    shutil.copytree(tiny_llama, folder)
    marker = tmp_path / "code-ran"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                    "from transformers import LlamaModel as EvilModel\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    try:
        CaptionEncoder.from_pretrained(str(folder))
    except ValueError:
        pass  # refusing is fine too; running the file is not
    assert not marker.exists()
