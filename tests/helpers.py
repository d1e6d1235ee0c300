"""Test helpers shared by several test files (launching torchrun, reading a run's outputs)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from llm2clip.train.checkpoint import list_checkpoints


def torchrun(nproc: int, target: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a local rendezvous on a free port, so parallel runs do not
    collide) with one CPU thread per process; fails the test with stderr on a non-zero exit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    done = subprocess.run(launcher + target, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def load_worker(path: Path):
    """A script of tests/dist_scripts/ imported as a module, to run its code in this process."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_under_torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    return torchrun(nproc, ["-m", "llm2clip.cli", *args])


def cli_under_accelerate(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N -m llm2clip.cli ...`. Without GPUs the
    processes join over gloo on CPU. (`--cpu` would make accelerate use mpirun for N > 1.)"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if nproc > 1 else []),
                "--num_processes", str(nproc),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port()), "-m", "llm2clip.cli"]
    done = subprocess.run(launcher + list(args), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"accelerate launch failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_checkpoint_weights(run: Path) -> dict[str, torch.Tensor]:
    """The newest checkpoint's weights; it must be the run's final logged step (comparing two
    runs' last checkpoints says nothing if either stopped, or was pruned, short of it)."""
    newest = list_checkpoints(run / "checkpoints")[-1]
    steps = [json.loads(line).get("step") for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = max(s for s in steps if s is not None)
    assert json.loads((newest / "state.json").read_text())["step"] == final, f"{newest} is not the final step {final}"
    return load_file(str(newest / "weights.safetensors"))


def logged_losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def save_lora_with_random_b(base: str, folder: Path, dropout: float, seed: int) -> str:
    """A stage-1 folder as training leaves it: a LoRA (r 4) on `base` whose B matrices are
    random (a fresh LoRA's B is 0: it would change nothing), with the given dropout."""
    from llm2clip.text import CaptionEncoder

    torch.manual_seed(seed)  # LoRA's A draws from the global RNG: the same folder whichever test asks first
    encoder = CaptionEncoder.from_pretrained(base, lora={"r": 4, "alpha": 8, "dropout": dropout})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    encoder.save_pretrained(folder)
    return str(folder)
