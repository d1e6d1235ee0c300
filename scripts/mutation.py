"""Mutation testing with mutmut, one core module at a time against that module's fast tests.

    python scripts/mutation.py [MODULE ...]     (default: every module in MODULES)

Each module runs in its own scratch copy of src/ and tests/ (runs/mutation/<module>/),
with a setup.cfg that asks mutmut to mutate that file only and to run only the module's
test files (minus the `slow` and `distributed` markers, except where the module's
behaviour only shows across processes). PYTHONPATH points at the mutated sources so that
processes the tests launch (torchrun) run the mutant too. Prints one line per module:
killed / total and the score, and writes runs/mutation/scores.json. Surviving mutants:
`cd runs/mutation/<module> && mutmut results` and `mutmut show <name>`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAST = "not slow and not distributed"

# module (under src/llm2clip/) -> (its tests, the pytest -m expression)
MODULES: dict[str, tuple[list[str], str]] = {
    "losses.py": (["tests/test_losses.py"], FAST),
    "eval/retrieval.py": (["tests/test_retrieval.py", "tests/test_properties.py"], FAST),
    "text/pooling.py": (["tests/test_pooling.py", "tests/test_caption_encoder.py", "tests/test_properties.py"],
                        FAST),
    "text/tokenization.py": (["tests/test_tokenization.py", "tests/test_caption_encoder.py",
                              "tests/test_properties.py"], FAST),
    "embeddings/store.py": (["tests/test_embeddings.py", "tests/test_store_alignment.py",
                             "tests/test_properties.py"], FAST),
    "embeddings/writer.py": (["tests/test_embeddings.py"], FAST),
    "data/caption_choice.py": (["tests/test_stage2_data.py", "tests/test_store_alignment.py"], FAST),
    "adaptor.py": (["tests/test_adaptor.py"], FAST),
    # mutmut's coverage cannot follow torchrun's processes: test_distributed_helpers.py runs
    # each line in-process against a simulated group
    "distributed.py": (["tests/test_distributed_helpers.py", "tests/test_losses.py",
                        "tests/test_distributed_loss.py"], "not slow"),
}


def scratch_copy(module: str) -> Path:
    name = module.replace("/", ".").removesuffix(".py")
    scratch = REPO / "runs" / "mutation" / name
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    for folder in ("src", "tests", "configs"):
        shutil.copytree(REPO / folder, scratch / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", scratch / "pyproject.toml")
    tests, marker = MODULES[module]
    (scratch / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths=src\n"
        "also_copy=\n    configs\n"  # the tests read configs/stage*/tiny.yaml
        f"only_mutate=src/llm2clip/{module}\n"
        "pytest_add_cli_args_test_selection=\n" + "".join(f"    {t}\n" for t in tests) +
        "pytest_add_cli_args=\n    -q\n    -p\n    no:cacheprovider\n    -m\n" f"    {marker}\n"
        # a mutant times out at 15 x its tests' time + this many seconds: on a shared 2-core
        # machine a 0.1 s test can take seconds, which would count as a time-out, not a kill
        "timeout_constant=20\n",
        encoding="utf-8")
    return scratch


def run_module(module: str, children: int) -> dict:
    scratch = scratch_copy(module)
    # PYTHONPATH for the processes the tests launch. The folder must exist before mutmut
    # starts: Python caches "no such folder" per sys.path entry, and mutmut's own entry for
    # the mutated sources is the same string, so it would be skipped for the original code.
    (scratch / "mutants" / "src").mkdir(parents=True)
    # One thread: mutmut forks a worker per mutant, and a forked child of a process whose
    # OpenMP pool is running can deadlock in torch's first parallel op (every mutant would
    # then "time out").
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(scratch / "mutants" / "src")}
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run(mutmut + ["run", "--max-children", str(children)], cwd=scratch, env=env, check=False,
                   stdout=open(scratch / "mutmut-run.log", "w"), stderr=subprocess.STDOUT)
    listed = subprocess.run(mutmut + ["results", "--all", "true"], cwd=scratch, env=env, capture_output=True,
                            text=True).stdout
    status: dict[str, str] = {}
    for line in listed.splitlines():
        found = re.match(r"\s*(\S+): (\w[\w ]*)$", line)
        if found:
            status[found.group(1)] = found.group(2).strip()
    killed = sum(s == "killed" for s in status.values())
    survivors = sorted(n for n, s in status.items() if s != "killed")
    return {"module": module, "mutants": len(status), "killed": killed,
            "score": round(100 * killed / len(status), 1) if status else None,
            "not_killed": {n: status[n] for n in survivors}}


def main(argv: list[str]) -> int:
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"unknown module(s) {unknown}; choose from {list(MODULES)}", file=sys.stderr)
        return 2
    children = int(os.environ.get("MUTATION_CHILDREN", "1"))
    scores_file = REPO / "runs" / "mutation" / "scores.json"
    for module in modules:
        result = run_module(module, children)
        # re-read before writing: two runs of this script on different modules may share the file
        scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
        scores[module] = result
        scores_file.write_text(json.dumps(scores, indent=2) + "\n")
        print(f"{module}: {result['killed']}/{result['mutants']} killed ({result['score']} %)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
