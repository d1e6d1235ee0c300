"""What every benchmark script shares: devices, peak memory, fresh-subprocess runs,
interleaved timing, models to benchmark with, and the Markdown/JSON output.

Memory. On a GPU the figure is `torch.cuda.max_memory_allocated`; on the CPU it is the
process's peak resident set (VmHWM in /proc/self/status) minus its resident set right
after the imports, so a variant is charged for every model it loads. Each variant whose
memory is reported runs in a fresh subprocess, so variants cannot pollute each other.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1024 ** 3
RESULT_PREFIX = "BENCH-RESULT "


# ------------------------------------------------------------------ devices and memory
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_bytes() -> int:
    return _proc_status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    return _proc_status_kib("VmHWM") * 1024


class PeakMemory:
    """Start after the imports; `.peak()` is the memory used since (bytes)."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.base = rss_bytes()

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return peak_rss_bytes() - self.base

    @property
    def kind(self) -> str:
        return "cuda max_memory_allocated" if self.device.type == "cuda" else "peak RSS (VmHWM) - RSS after imports"


# ------------------------------------------------------------------ subprocesses
def run_child(script: str, spec: dict[str, Any], timeout: float = 3600,
              extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `script --child <json spec>` in a fresh interpreter; return the dict it reports."""
    command = [sys.executable, script, "--child", json.dumps(spec)]
    env = {**os.environ, **(extra_env or {})}
    # stderr passes through: the child's progress and, on failure, its traceback
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"{' '.join(command[:3])} failed (exit {done.returncode}); its stderr is above")


def report_child(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    began = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - began


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int, device: torch.device,
                warmup: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each variant, run A,B,C,A,B,C,... so load from other jobs hits all alike."""
    if warmup:
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
            print(f"  {name}: {times[name][-1]:.3f} s", file=sys.stderr, flush=True)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul throughput now (best of `repeats`), GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


# ------------------------------------------------------------------ models
def tiny_or_named_llm(name: str, root: Path) -> str:
    """A caption-encoder source: an embedded name/folder as given, or "random:HxL" (a random
    Llama of hidden H and L layers, saved once under `root`; heads of 64 dims, up to 4 KV heads,
    MLP 2.75 H as in Llama)."""
    if not name.startswith("random:"):
        return name
    from llm2clip.testing.random_llm import save_random_llm

    hidden, layers = (int(x) for x in name.split(":", 1)[1].lower().split("x"))
    folder = root / f"random-llama-{hidden}x{layers}"
    if not (folder / "config.json").is_file():
        heads = max(1, hidden // 64)
        kv_heads = max(k for k in range(1, min(4, heads) + 1) if heads % k == 0)  # must divide the heads
        save_random_llm(folder, "llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
                        num_kv_heads=kv_heads, intermediate_size=int(2.75 * hidden), vocab_size=2048)
    return str(folder)


def emoji_captions(n_scenes: int, fields: tuple[str, ...], seed: int = 0) -> list[str]:
    """Demo captions (emoji scenes), field by field within each scene."""
    from llm2clip.demo.scenes import make_scenes

    return [scene.captions[f] for scene in make_scenes(n_scenes, seed) for f in fields]


# ------------------------------------------------------------------ output
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        info["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, result: dict[str, Any], table: str, out_dir: str | None = None) -> Path:
    folder = Path(out_dir) if out_dir else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    result = {"benchmark": name, "command": " ".join([Path(sys.executable).name] + sys.argv),
              "machine": machine(), **result, "table": table}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"\n(written to {path})")
    return path
