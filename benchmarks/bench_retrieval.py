"""`retrieval_metrics` at scale: speed against this machine's matmul, memory, N² growth.

    python benchmarks/bench_retrieval.py                    # N = 10k, 30k, 100k, D = 512
    python benchmarks/bench_retrieval.py --quick            # N = 1k, 3k
    python benchmarks/bench_retrieval.py --sizes 100000 --dim 1280

Each N runs in a fresh subprocess: random L2-normalised image and text embeddings
(text j belongs to image j), then `retrieval_metrics` (both directions). Useful work is
2·N·N·D FLOPs per direction; the same subprocess measures fp32 matmul GFLOP/s (a big
square matmul) right before and after, and the figure is the ratio to their mean.
Memory: peak over the whole subprocess (inputs included) minus the RSS after imports.
"""
from __future__ import annotations

import argparse
import json
import math

import bench_common as bc
import torch


def child(spec: dict) -> None:
    from llm2clip.eval.retrieval import retrieval_metrics

    device = bc.pick_device(spec["device"])
    memory = bc.PeakMemory(device)
    n, dim = spec["n"], spec["dim"]
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(images + 0.5 * torch.randn(n, dim, generator=generator), dim=-1)
    owner = torch.arange(n)
    input_bytes = images.nbytes + texts.nbytes + owner.nbytes
    del generator
    before = bc.matmul_gflops(device, spec["matmul_n"])
    seconds = bc.timed(lambda: retrieval_metrics(images, texts, owner), device)
    after = bc.matmul_gflops(device, spec["matmul_n"])
    flops = 2 * 2 * n * n * dim
    bc.report_child({"n": n, "dim": dim, "seconds": seconds, "gflops": flops / seconds / 1e9,
                     "machine_gflops_before": before, "machine_gflops_after": after,
                     "peak_bytes": memory.peak(), "input_bytes": input_bytes})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--matmul-n", type=int, default=4096, help="side of the square matmul that measures the machine")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out-dir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.quick:
        args.sizes, args.matmul_n = [1000, 3000], 1024
    runs = [bc.run_child(__file__, {"n": n, "dim": args.dim, "device": args.device, "matmul_n": args.matmul_n})
            for n in args.sizes]
    base = runs[0]
    rows = []
    for run in runs:
        machine = (run["machine_gflops_before"] + run["machine_gflops_after"]) / 2
        run["fraction_of_matmul"] = run["gflops"] / machine
        n_ratio = (run["n"] / base["n"]) ** 2
        rows.append([f"{run['n']:,}", f"{run['seconds']:.2f}", f"{run['gflops']:.1f}", f"{machine:.1f}",
                     f"{100 * run['fraction_of_matmul']:.0f} %", run["fraction_of_matmul"] >= 0.5,
                     f"{run['seconds'] / base['seconds']:.1f} (N² ratio {n_ratio:.0f})",
                     f"{run['peak_bytes'] / bc.GIB:.2f}", f"{run['input_bytes'] / bc.GIB:.2f}",
                     run["peak_bytes"] < 2 * bc.GIB])
    table = bc.markdown_table(
        ["N images = N texts", "seconds", "GFLOP/s (2·2·N²·D / s)", "matmul GFLOP/s (same run)", "fraction",
         "≥ 50 %?", "time / first", "peak GiB", "of it inputs GiB", "< 2 GiB?"], rows)
    slope = (math.log(runs[-1]["seconds"] / base["seconds"]) / math.log(runs[-1]["n"] / base["n"])
             if len(runs) > 1 else float("nan"))
    table += (f"\n\nD = {args.dim}, both directions, fresh subprocess per N; time grows as N^{slope:.2f} "
              f"(N² is 2.00); memory = peak RSS - RSS after imports (cuda: max_memory_allocated).")
    bc.write_result("retrieval", {"dim": args.dim, "runs": runs, "time_exponent": slope}, table, args.out_dir)


if __name__ == "__main__":
    main()
