"""Every benchmark script runs end to end with --quick on tiny random models (no timing
assertions: this only keeps the scripts from rotting as the library changes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_vision

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "bench_stage2_step.py": ("stage2_step", ["--memory-llm"]),  # no memory search: a subprocess per probe
    "bench_embed.py": ("embed", []),
    "bench_retrieval.py": ("retrieval", []),
    "bench_storage.py": ("storage", []),
    "bench_loader.py": ("loader", []),
    "bench_store_verify.py": ("store_verify", []),
    "bench_search.py": ("search", []),
    "bench_demo_memory.py": ("demo_memory", ["--variants", "glibc-default", "checkpointing", "--steps", "1"]),
    "bench_stage1_batch.py": ("stage1_batch", []),
}


@pytest.fixture(scope="module")
def tiny_vision(tmp_path_factory):
    return save_tiny_vision(tmp_path_factory.mktemp("bench-vision") / "clip")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_script_runs_quick(script, tmp_path, tiny_vision):
    name, extra = SCRIPTS[script]
    args = [sys.executable, str(REPO / "benchmarks" / script), "--quick", "--out-dir", str(tmp_path), *extra]
    if script in ("bench_stage2_step.py", "bench_loader.py"):
        args += ["--vision", tiny_vision]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name and result["table"].startswith("|")
    assert "|---|" in done.stdout


def test_stage2_memory_search_starts_at_the_given_batch(tmp_path, tiny_vision):
    """--start-batch N --max-batch N probes N alone (one subprocess) and reports it capped ("N+")."""
    args = [sys.executable, str(REPO / "benchmarks" / "bench_stage2_step.py"), "--quick", "--out-dir", str(tmp_path),
            "--vision", tiny_vision, "--llm", "--memory-llm", "random:64x2", "--memory-modes", "offline",
            "--memory-micro-batch", "2", "--start-batch", "4", "--max-batch", "4", "--result-name", "probe"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads((tmp_path / "probe.json").read_text())["configs"]["random:64x2"]["memory"]["offline+micro2"]
    assert list(found["peak_bytes_by_batch"]) == ["4"] and found["largest_batch"] == 4 and found["capped"]
