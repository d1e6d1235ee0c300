"""Image-search indexes at a million images: build time and memory, query latency, recall.

    python benchmarks/bench_search.py                 # 1 M random unit vectors of dim 256 (the demo's joint dim)
    python benchmarks/bench_search.py --quick
    python benchmarks/bench_search.py --n 2000000 --dim 512 --queries 1000

The database is `--n` random unit vectors (seeded), built into each index kind the library
makes (`llm2clip.search.faiss_index`: the same factory, IVF training sample and parameters
as `llm2clip index`): flat fp32, flat fp16 (the default), IVF fp16 (nlist = the default
4 sqrt(N)) and HNSW32 fp16. Each kind is built in a fresh subprocess: build seconds
(training + adding), peak memory (peak RSS minus RSS once the vectors are in memory: the
index plus what building it needs), and the serialised index size. Queries are then run
one at a time (what a search server does): p50/p99 latency in ms over `--queries` queries,
and recall@10 against exact fp32 search (computed once, in its own subprocess), for two
query sets:
  random  unrelated random unit vectors: the worst case for approximate search (in 256
          dimensions every vector is almost equally far from a random query)
  near    a database vector plus noise (cosine ~0.9 to it): a query with real neighbours,
          closer to what a text query meets in a trained space
FAISS uses `--threads` OpenMP threads (default 1). Each query's wall time and CPU time are
recorded: on a shared machine the wall time includes waiting for a core, the CPU time is
what the query costs on a free one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc
import numpy as np

KINDS = {  # name: (IndexKind arguments, search parameter sweeps)
    "flat fp32": ({"kind": "flat", "dtype": "fp32"}, [{}]),
    "flat fp16": ({"kind": "flat", "dtype": "fp16"}, [{}]),
    "ivf fp16": ({"kind": "ivf", "dtype": "fp16"}, [{"nprobe": 8}, {"nprobe": 32}, {"nprobe": 128}]),
    "hnsw32 fp16": ({"kind": "hnsw", "dtype": "fp16"}, [{"ef_search": 32}, {"ef_search": 64}, {"ef_search": 256}]),
}


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((n, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def dataset(n: int, dim: int, queries: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    base = unit_rows(np.random.default_rng(0), n, dim)
    rng = np.random.default_rng(1)
    near = base[rng.choice(n, size=queries, replace=False)] + 0.5 * unit_rows(rng, queries, dim)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    return base, {"random": unit_rows(rng, queries, dim), "near": near}


def exact_top10(base: np.ndarray, queries: np.ndarray, chunk: int = 64) -> np.ndarray:
    out = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ base.T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def child(spec: dict) -> None:
    import faiss

    from llm2clip.search.faiss_index import IndexKind, fill_index, index_bytes, new_index, set_search_parameters, \
        training_rows

    faiss.omp_set_num_threads(spec["threads"])
    base, queries = dataset(spec["n"], spec["dim"], spec["queries"])
    if spec["name"] == "truth":
        for name, rows in queries.items():
            np.save(Path(spec["tmp"]) / f"truth-{name}.npy", exact_top10(base, rows))
        bc.report_child({})
        return
    memory = bc.PeakMemory(bc.pick_device("cpu"))
    kind = IndexKind(**spec["kind"])
    began, began_cpu = time.perf_counter(), time.process_time()
    index = new_index(kind, spec["dim"], len(base))
    sample = base[training_rows(len(base), kind)] if not index.is_trained else None
    fill_index(index, (base[start:start + 100_000] for start in range(0, len(base), 100_000)), sample)
    build_s, build_cpu_s = time.perf_counter() - began, time.process_time() - began_cpu
    peak = memory.peak()
    size = len(index_bytes(index))
    del base
    result = {"build_s": build_s, "build_cpu_s": build_cpu_s, "peak_gib": peak / bc.GIB, "index_gib": size / bc.GIB, "runs": []}
    for params in spec["sweeps"]:
        set_search_parameters(index, kind, **params)
        run = {"params": params}
        for name, rows in queries.items():
            index.search(rows[:20], 10)  # warm-up
            wall, cpu, found = [], [], []
            for row in rows:
                started, started_cpu = time.perf_counter(), time.process_time()
                _, ids = index.search(row[None], 10)
                wall.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
                found.append(ids[0])
            truth = np.load(Path(spec["tmp"]) / f"truth-{name}.npy")
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
            run[name] = {"p50_ms": 1000 * float(np.percentile(wall, 50)), "p99_ms": 1000 * float(np.percentile(wall, 99)),
                         "cpu_p50_ms": 1000 * float(np.percentile(cpu, 50)),
                         "cpu_p99_ms": 1000 * float(np.percentile(cpu, 99)), "recall@10": float(recall)}
        result["runs"].append(run)
        print(f"  {spec['name']} {params}: {run}", file=sys.stderr, flush=True)
    bc.report_child(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200, help="queries per set (random, near)")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads per query (1: a server answers "
                        "concurrent queries, one core each; more threads on a shared machine wait on each other)")
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=list(KINDS))
    parser.add_argument("--quick", action="store_true", help="5k vectors of dim 32, 50 queries")
    parser.add_argument("--out-dir")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        import json

        child(json.loads(args.child))
        return
    if args.quick:
        args.n, args.dim, args.queries = 5_000, 32, 50
    common = {"n": args.n, "dim": args.dim, "queries": args.queries, "threads": args.threads}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        bc.run_child(__file__, {**common, "name": "truth", "tmp": tmp})
        for name in args.kinds:
            kind, sweeps = KINDS[name]
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = bc.run_child(__file__, {**common, "name": name, "kind": kind, "sweeps": sweeps, "tmp": tmp})
    rows = []
    for name, result in results.items():
        for k, run in enumerate(result["runs"]):
            params = ", ".join(f"{key}={value}" for key, value in run["params"].items()) or "-"
            build = [f"{result['build_s']:.0f} / {result['build_cpu_s']:.0f}", f"{result['peak_gib']:.2f}",
                     f"{result['index_gib']:.2f}"] if k == 0 else ["", "", ""]
            random, near = run["random"], run["near"]
            rows.append([name, params, *build, f"{random['cpu_p50_ms']:.2f} / {random['cpu_p99_ms']:.2f}",
                         f"{random['p50_ms']:.2f} / {random['p99_ms']:.2f}", f"{random['recall@10']:.3f}",
                         f"{near['cpu_p50_ms']:.2f} / {near['cpu_p99_ms']:.2f}", f"{near['recall@10']:.3f}"])
    table = bc.markdown_table(["index", "search parameter", "build s (wall / CPU)", "build peak GiB", "index GiB",
                               "random query: CPU ms p50 / p99", "random query: wall ms p50 / p99",
                               "random: recall@10", "near query: CPU ms p50 / p99", "near: recall@10"], rows)
    bc.write_result("search", {**common, "results": results}, table, args.out_dir)


if __name__ == "__main__":
    main()
